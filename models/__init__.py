"""Model candidates trained by train_model (this folder is the package fraudflow.models)."""
