"""quickstart: a Flower / PyTorch app on generated images (its own package named `app`)."""
