"""sklearn_logreg: Flower's scikit-learn quickstart shape (logistic regression, no torch)."""
