"""Privacy attacks and audits: what each protection stops, measured on your own runs.

- ``inversion``: the server reconstructs a client's images from its round update
  (DLG / Inverting Gradients, iDLG labels), PSNR/SSIM of the best match.
- ``membership``: loss-threshold and offline LiRA membership inference on a model
  (the global model, or one client's model as the server sees it in plaintext),
  AUC / TPR at low FPR, and the check ``TPR <= e^eps FPR + delta`` a DP model must pass.
- ``audit``: the one-run DP audit (Steinke, Nasr and Jagielski 2023): an empirical
  epsilon lower bound from canaries; one above the ledger's epsilon is a bug.

Experiments only: nothing here runs in a training round. Names load lazily, as in
the package root, so importing this module imports neither torch nor scipy.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {
    # reconstruction from updates (the server's view)
    "InversionSettings": "flwr_privacy.attacks.inversion",
    "Reconstruction": "flwr_privacy.attacks.inversion",
    "reconstruct": "flwr_privacy.attacks.inversion",
    "invert": "flwr_privacy.attacks.inversion",
    "recover_labels": "flwr_privacy.attacks.inversion",
    "as_gradient": "flwr_privacy.attacks.inversion",
    "match_images": "flwr_privacy.attacks.inversion",
    "psnr": "flwr_privacy.attacks.inversion",
    "ssim": "flwr_privacy.attacks.inversion",
    # membership inference (a model user's view, the server's view of one client)
    "loss_threshold_scores": "flwr_privacy.attacks.membership",
    "true_class_phi": "flwr_privacy.attacks.membership",
    "lira_offline_scores": "flwr_privacy.attacks.membership",
    "attack_metrics": "flwr_privacy.attacks.membership",
    "tpr_at_fpr": "flwr_privacy.attacks.membership",
    "dp_tpr_bound": "flwr_privacy.attacks.membership",
    "check_dp_bound": "flwr_privacy.attacks.membership",
    # the one-run DP audit: an empirical epsilon lower bound from canaries
    "AuditResult": "flwr_privacy.attacks.audit",
    "one_run_audit": "flwr_privacy.attacks.audit",
    "epsilon_lower_bound": "flwr_privacy.attacks.audit",
    "p_value": "flwr_privacy.attacks.audit",
    "choose_guesses": "flwr_privacy.attacks.audit",
    "loss_scores": "flwr_privacy.attacks.audit",
    "gradient_alignment_scores": "flwr_privacy.attacks.audit",
    "gaussian_canaries": "flwr_privacy.attacks.audit",
    "mislabel": "flwr_privacy.attacks.audit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'flwr_privacy.attacks' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
