"""The systems under test and their requests: a sample of real transactions as request bodies,
the in-process scorer and lookups, the servers (launched together), the correctness check and
warm-up."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _bench.load import wrk_saturation, wrk_script
from _bench.output import log
from _bench.processes import tree_rss_mb, tree_size
from _bench.services import MlflowServer

from _serving import HEY_WORKERS


@dataclass
class InProcess:
    """fraudflow's scoring objects in this process (the floor, and the MLflow bodies' inputs)."""

    scorer: object
    lookup: object
    redis_lookup: object | None


@dataclass
class Requests:
    bodies: list[dict]  # the sample's transactions as /score bodies
    transactions: list  # the same, as scoring.Transaction
    texts: dict[str, list[str]]  # "score" / "mlflow": HEY_WORKERS JSON bodies, the same transactions
    files: dict[str, list[Path]]  # the texts in files (hey -D)
    lua: dict[str, Path]  # wrk scripts rotating the texts


def in_process(settings, model_uri: str, version: str, redis: dict | None) -> InProcess:
    from fraudflow.serving.scoring import FeatureLookup, Scorer

    scorer = Scorer(model_uri, settings)
    lookup = FeatureLookup(settings)
    assert scorer.version == version and lookup.ready, lookup.error
    redis_lookup = None
    if redis:
        redis_lookup = FeatureLookup(redis["settings"])
        os.environ["FRAUDFLOW_HOME"] = str(settings.root)  # open_store points it at the store's home
        assert redis_lookup.ready, redis_lookup.error
    return InProcess(scorer, lookup, redis_lookup)


def build_requests(settings, local: InProcess, work: Path) -> Requests:
    """Real transactions of the newest lake day (known customers and terminals); the first
    HEY_WORKERS of them as /score bodies and, with their 15 model inputs from the in-process
    lookup, as MLflow bodies."""
    from fraudflow.deployment.controller import replay_sample
    from fraudflow.features.compute import MODEL_INPUTS
    from fraudflow.serving.scoring import Transaction

    sample = replay_sample(settings, 2000, seed=0)
    bodies = [
        {
            "transaction_id": int(r.TRANSACTION_ID),
            "tx_datetime": r.TX_DATETIME.isoformat(),
            "customer_id": str(r.CUSTOMER_ID),
            "terminal_id": str(r.TERMINAL_ID),
            "tx_amount": float(r.TX_AMOUNT),
        }
        for r in sample.itertuples(index=False)
    ]
    transactions = [Transaction.model_validate(b) for b in bodies]
    texts = {"score": [], "mlflow": []}
    for i in range(HEY_WORKERS):
        features, degraded, _ = local.lookup.lookup([transactions[i]])
        assert not degraded.any(), f"transaction {bodies[i]} is not in the online store"
        if local.redis_lookup is not None:  # Redis holds the same values as SQLite
            on_redis, degraded, _ = local.redis_lookup.lookup([transactions[i]])
            assert not degraded.any(), f"transaction {bodies[i]} is not in the Redis online store"
            assert np.allclose(on_redis.to_numpy(), features.to_numpy()), (on_redis, features)
        texts["score"].append(json.dumps(bodies[i]))
        frame = {"columns": list(MODEL_INPUTS), "data": features[list(MODEL_INPUTS)].to_numpy().tolist()}
        texts["mlflow"].append(json.dumps({"dataframe_split": frame}))
    files = {kind: [work / f"{kind}-{i}.json" for i in range(len(t))] for kind, t in texts.items()}
    for kind, paths in files.items():
        for path, text in zip(paths, texts[kind], strict=True):
            path.write_text(text)
    # fraudflow's bodies get a new transaction id per request (a new transaction: the card's
    # history is written); MLflow's carry the inputs, there is nothing to write.
    lua = {kind: wrk_script(work / f"{kind}.lua", t, fresh_ids=kind == "score") for kind, t in texts.items()}
    return Requests(bodies, transactions, texts, files, lua)


def start_servers(args, settings, model_uri: str, servers: list, redis: dict | None) -> dict[str, dict]:
    """``mlflow models serve`` and ``bentoml serve`` (1 and 2 workers, plus the Redis variant):
    launched all, then waited for (start-up overlaps). Each is appended to ``servers`` as soon
    as it starts, for the caller to stop. Returns name -> system."""
    from fraudflow.deployment.service_process import ServingProcess

    log("starting mlflow models serve and bentoml serve (1 and 2 workers)")
    mlflow_server = MlflowServer(settings, model_uri).launch()
    servers.append(mlflow_server)
    bento_env = {"FRAUDFLOW_MODEL_URI": model_uri, "FRAUDFLOW_FEAST_ONLINE_STORE": "sqlite"}
    worker_counts = (1,) if args.no_two_workers else (1, 2)
    variants = [(w, "sqlite", settings, bento_env) for w in worker_counts]
    if redis:  # next to the largest SQLite service, same worker count
        redis_env = {**bento_env, "FRAUDFLOW_FEAST_ONLINE_STORE": "redis", "FRAUDFLOW_REDIS_URL": redis["url"]}
        variants.append((worker_counts[-1], "redis", redis["settings"], redis_env))
    systems = {}
    for workers, store, home_settings, env in variants:
        proc = ServingProcess(home_settings, env={**env, "FRAUDFLOW_SERVING_WORKERS": str(workers)})
        servers.append(proc)
        proc.start()
        name = f"fraudflow BentoML, {workers} worker{'s' * (workers > 1)}"
        systems[name + (", Redis online store" if store == "redis" else "")] = {
            "kind": "score",
            "store": store,
            "url": f"{proc.url}/score",
            "pid": proc.proc.pid,
            "extra_pids": [redis["pid"]] if store == "redis" else [],
            "base": proc.url,
            "workers": workers,
            "sqlite_twin": name,
        }
    mlflow_server.wait_ready()
    systems["mlflow models serve, 1 worker"] = {
        "kind": "mlflow",
        "store": None,
        "url": f"{mlflow_server.url}/invocations",
        "pid": mlflow_server.proc.pid,
        "extra_pids": [],
        "base": mlflow_server.url,
        "workers": 1,
    }
    log(f"servers ready: {[(k, tree_size(s['pid'])) for k, s in systems.items()]}")
    return systems


def check_and_warm(systems: dict[str, dict], requests: Requests, version: str) -> None:
    """Every server answers the first body with the same version and probability (the Redis
    service the same as its SQLite twin), then takes 3 s of wrk to warm up; records its
    processes and their resident memory."""
    import httpx

    for name, s in systems.items():
        answer = httpx.post(
            s["url"],
            content=requests.texts[s["kind"]][0],
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200, (name, answer.status_code, answer.text[:500])
        if s["kind"] == "score":
            assert answer.json()["model_version"] == version and not answer.json()["degraded"], answer.text
            s["probability"] = answer.json()["fraud_probability"]
            if s["store"] == "redis":  # same features, same model: same score as on SQLite
                twin = systems[s["sqlite_twin"]]["probability"]
                assert abs(s["probability"] - twin) < 1e-9, (name, s["probability"], twin)
        s["first_answer"] = answer.text[:200]
        s["processes"] = tree_size(s["pid"])
        warm = wrk_saturation(s["url"], requests.lua[s["kind"]], 3, connections=8)
        assert warm["failed"] == 0, (name, warm)
        s["rss_mb"] = tree_rss_mb(s["pid"])
        log(f"warmed {name}: {warm['rps']:.0f} req/s, answer {s['first_answer']}")
