"""The neural candidate: a small PyTorch MLP on the 15 inputs.

The module carries its own input standardisation (mean and std as registered buffers,
fitted on the training rows), so the object MLflow pickles is the whole model: whoever
loads it feeds raw inputs and gets probabilities, with no scaler logged beside it that
could drift out of step. ``forward`` returns probabilities for the same reason; training
uses ``logits`` with ``BCEWithLogitsLoss`` for numerical stability.

Training is deterministic for a seed on CPU: the seed, thread count and deterministic-ops
flag are set for the fit only (the caller's RNG state, thread count and flag are restored),
so fitting twice gives bit-identical weights. These are process-global torch settings: do
not fit two MLPs concurrently in threads of one process.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from fraudflow.models.candidates import check_labels, input_frame

_MIN_STD = 1e-6  # below this a column is treated as constant (scale 1), not divided by ~0


class FraudMLP(nn.Module):
    """Standardise, then ReLU hidden layers with dropout, then one logit.

    Args:
        n_inputs: Number of input columns.
        hidden: Width of each hidden layer.
        dropout: Dropout probability after each hidden layer (0 disables it).
        mean: Per-column mean of the training inputs (default 0).
        std: Per-column standard deviation of the training inputs (default 1); values
            below 1e-6 (constant columns) are replaced by 1 rather than dividing by ~0.
    """

    def __init__(
        self,
        n_inputs: int,
        hidden: tuple[int, ...] = (64, 32),
        dropout: float = 0.2,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        mean = torch.zeros(n_inputs) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std = torch.ones(n_inputs) if std is None else torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (n_inputs,) or std.shape != (n_inputs,):
            raise ValueError(f"mean and std must have shape ({n_inputs},)")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", torch.where(std >= _MIN_STD, std, torch.ones_like(std)))  # NaN -> 1 too
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.history: list[dict[str, float]] = []  # per-epoch losses, filled by fit_mlp
        # What rebuilds this module from its weights alone (models/mlp_flavor.py stores it).
        self.architecture = {"n_inputs": n_inputs, "hidden": list(hidden), "dropout": float(dropout)}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores, shape (n,), from unscaled float32 inputs of shape (n, n_inputs)."""
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fraud probabilities, shape (n,), from unscaled float32 inputs of shape (n, n_inputs)."""
        return torch.sigmoid(self.logits(x))


class MLPParams(BaseModel):
    """Hyper-parameters of the MLP candidate; unknown keys are an error.

    Why these defaults: (64, 32) ReLU units are ample for 15 inputs, and dropout 0.2 with a
    little weight decay keeps a few hundred positives from being memorised. Batches of 512
    rows hold ~4 positives each at 0.8% fraud, so the gradient rarely ignores the class
    entirely; 15 epochs with early stopping (patience 3) on a stratified 10% validation split
    stop once the validation loss stops falling and keep the best epoch's weights.
    ``pos_weight=None`` leaves the loss unweighted so the outputs stay calibrated
    probabilities; set it (e.g. ~n_negative / n_positive) to trade calibration for recall.
    ``validation_share=0`` trains all epochs on every row.

    ``threads=1``: a model this small gains ~10% from a second thread on an idle 2-core
    machine (70,000 rows: ~1.8 s against ~2.0 s) but took 6-32 s instead of 2-4 s when
    another process held one core. The thread count is part of what makes a fit
    reproducible: the same seed with a different count gives slightly different weights.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: tuple[int, ...] = Field((64, 32), min_length=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    pos_weight: float | None = Field(None, gt=0)
    seed: int = 0
    validation_share: float = Field(0.1, ge=0, lt=1)
    patience: int = Field(3, ge=1)
    threads: int = Field(1, ge=1)


@contextmanager
def _deterministic_torch(seed: int, threads: int) -> Iterator[None]:
    """Seeded, deterministic, fixed-thread torch for the block; the caller's state is restored."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous_deterministic)
            torch.set_num_threads(previous_threads)


def _split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, validation), stratified so both sides hold positives."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for cls in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(len(rows) * share))
        if share > 0 and len(rows) > 1:
            n_val = min(max(n_val, 1), len(rows) - 1)
        validation.append(rows[:n_val])
        train.append(rows[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def _as_tensor(X: pd.DataFrame) -> torch.Tensor:
    values = input_frame(X).to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        raise ValueError(f"the MLP needs finite inputs: {bad} row(s) hold NaN or inf")
    return torch.from_numpy(values)


def fit_mlp(X: pd.DataFrame, y: np.ndarray, params: MLPParams) -> FraudMLP:
    """Fit the MLP candidate on CPU, deterministically for ``params.seed``.

    Args:
        X: Exactly the columns ``MODEL_INPUTS``, in that order; finite, cast to float32.
        y: Binary labels (0/1), one per row of ``X``, both classes present.
        params: The hyper-parameters.

    Returns:
        The module in eval mode, holding the weights of the epoch with the lowest validation
        loss (the last epoch when ``validation_share`` is 0); ``history`` lists each epoch's
        losses.

    Raises:
        ValueError: the columns are not ``MODEL_INPUTS``, an input is not finite, or the
            labels are not usable.
    """
    x_train, y_train, x_val, y_val = _training_tensors(X, y, params)
    with _deterministic_torch(params.seed, params.threads):
        model = _initial_model(x_train, y_train, params)
        pos_weight = None if params.pos_weight is None else torch.tensor(params.pos_weight)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        optimiser = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
        order = torch.Generator().manual_seed(params.seed)
        best_loss, best_state, stale = math.inf, None, 0
        for epoch in range(1, params.epochs + 1):
            train_loss = _train_epoch(model, loss_fn, optimiser, x_train, y_train, order, params.batch_size)
            record = {"epoch": float(epoch), "train_loss": train_loss}
            if len(x_val):
                record["val_loss"] = _validation_loss(model, loss_fn, x_val, y_val)
                if record["val_loss"] < best_loss:
                    best_loss, best_state, stale = record["val_loss"], copy.deepcopy(model.state_dict()), 0
                else:
                    stale += 1
            model.history.append(record)
            if stale >= params.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
    return model.eval()


def _training_tensors(
    X: pd.DataFrame, y: np.ndarray, params: MLPParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked inputs and float targets, split into ``(x_train, y_train, x_val, y_val)``.

    The split is stratified and seeded by ``params.seed`` (numpy, not torch), so it is the same
    whatever the torch RNG state.
    """
    inputs = _as_tensor(X)
    labels = check_labels(y, len(inputs))
    train_rows, val_rows = _split(labels, params.validation_share, params.seed)
    targets = torch.from_numpy(labels.astype(np.float32))
    return inputs[train_rows], targets[train_rows], inputs[val_rows], targets[val_rows]


def _initial_model(x_train: torch.Tensor, y_train: torch.Tensor, params: MLPParams) -> FraudMLP:
    """A fresh module standardising with the training rows' statistics, output bias at the prior.

    The output bias starts at the (weighted) base rate's logit: at 0.8% fraud a zero bias
    predicts 0.5 and the first epochs would only learn the prior. Call it inside
    :func:`_deterministic_torch`: the layer initialisation draws from torch's global RNG.
    """
    model = FraudMLP(
        x_train.shape[1],
        hidden=params.hidden,
        dropout=params.dropout,
        mean=x_train.mean(dim=0),
        std=x_train.std(dim=0),
    )
    weight = params.pos_weight or 1.0
    positives = float(y_train.sum()) * weight
    with torch.no_grad():
        model.net[-1].bias.fill_(math.log(positives / (len(y_train) - float(y_train.sum()))))
    return model


def _train_epoch(
    model: FraudMLP,
    loss_fn: nn.Module,
    optimiser: torch.optim.Optimizer,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    order: torch.Generator,
    batch_size: int,
) -> float:
    """One pass over the training rows in a shuffled order drawn from ``order``; the mean loss."""
    model.train()
    total = 0.0
    for batch in torch.randperm(len(x_train), generator=order).split(batch_size):
        optimiser.zero_grad()
        loss = loss_fn(model.logits(x_train[batch]), y_train[batch])
        loss.backward()
        optimiser.step()
        total += loss.item() * len(batch)
    return total / len(x_train)


def _validation_loss(model: FraudMLP, loss_fn: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor) -> float:
    """The loss on the validation rows, in eval mode (no dropout) and without gradients."""
    model.eval()
    with torch.inference_mode():
        return loss_fn(model.logits(x_val), y_val).item()


def predict_mlp(model: FraudMLP, X: pd.DataFrame) -> np.ndarray:
    """Fraud probabilities (float64, shape (n,)) of a fitted or loaded MLP."""
    model.eval()
    with torch.inference_mode():
        return model(_as_tensor(X)).numpy().astype(np.float64)
