"""Training, evaluation and reproduction of every shipped checkpoint: run each as a module from the repository
root, e.g. `python -m train.train_a2l --help`."""
