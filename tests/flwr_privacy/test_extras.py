"""Optional extras: the core imports no layer library; a missing extra names its install line.

Each check runs in a fresh interpreter (a subprocess), where a library can be made
unimportable by setting ``sys.modules[name] = None``, as if its extra were not installed.
"""

from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import flwr_privacy
from flwr_privacy.extras import EXTRAS, MissingExtraError, requires

ROOT = Path(__file__).resolve().parents[2]
# the heavy libraries no core module may import at import time (issue: a core install
# is Flower, numpy and cryptography)
HEAVY = ("torch", "tenseal", "phe", "gmpy2", "opacus", "opendp", "pandas", "sklearn", "scipy",
         "matplotlib", "torchmetrics", "ray")  # fmt: skip
# modules that are a layer of an extra: importing them needs that extra
LAYER_MODULES = {
    "flwr_privacy.he.ckks": "he",
    "flwr_privacy.he.paillier": "he",
    "flwr_privacy.he.model": "he",
    "flwr_privacy.strategy.server_keyed": "he",
    "flwr_privacy.dp.fit": "dp",
    "flwr_privacy.dp.sgd": "dp",
    "flwr_privacy.dp.laplace": "dp",
    "flwr_privacy.strategy.foolsgold": "robust",
    "flwr_privacy.attacks.audit": "attacks",
    "flwr_privacy.attacks.inversion": "attacks",
    "flwr_privacy.attacks.membership": "attacks",
}
ALL_MODULES = sorted(m.name for m in pkgutil.walk_packages(flwr_privacy.__path__, "flwr_privacy."))
CORE_MODULES = [m for m in ALL_MODULES if m not in LAYER_MODULES]
DIST = {"sklearn": "scikit-learn"}  # import name -> distribution name, where they differ


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_every_core_module_imports_no_layer_library() -> None:
    assert len(CORE_MODULES) > 40 and "flwr_privacy.strategy.secagg" in CORE_MODULES
    imports = "; ".join(f"import {m}" for m in ["flwr_privacy", *CORE_MODULES])
    loaded = _run(f"import sys; {imports}; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert ast.literal_eval(loaded) == []


def test_the_layer_table_names_real_modules() -> None:
    assert set(LAYER_MODULES) <= set(ALL_MODULES)


@pytest.mark.parametrize(("module", "blocked", "named"), [
    ("flwr_privacy.he.ckks", "tenseal", "flwr_privacy.he.ckks"),
    ("flwr_privacy.he.paillier", "phe", "flwr_privacy.he.paillier"),
    ("flwr_privacy.strategy.server_keyed", "tenseal", "flwr_privacy.he.model"),
    ("flwr_privacy.dp.fit", "torch", "flwr_privacy.dp.fit"),
    ("flwr_privacy.dp.laplace", "torch", "flwr_privacy.dp.laplace"),
    ("flwr_privacy.strategy.foolsgold", "sklearn", "flwr_privacy.strategy.foolsgold"),
    ("flwr_privacy.attacks.membership", "sklearn", "flwr_privacy.attacks.membership"),
    ("flwr_privacy.attacks.audit", "torch", "flwr_privacy.attacks.audit"),
])  # fmt: skip
def test_a_layer_without_its_extra_names_the_install_line(
    module: str, blocked: str, named: str
) -> None:
    extra = LAYER_MODULES[module]
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from flwr_privacy.extras import MissingExtraError\n"
        f"try:\n    import {module}\n"
        "except MissingExtraError as e:\n    print(repr(str(e)))\n"
    )
    message = ast.literal_eval(_run(code))
    assert f'pip install "flower-privacy[{extra}]"' in message
    assert repr(blocked) in message and named in message  # the library and the layer


def test_a_layer_reached_at_call_time_names_its_extra() -> None:
    """The ledger imports Opacus only when it accounts: that call names [dp]."""
    code = (
        "import sys; sys.modules['opacus'] = None\n"
        "from flwr_privacy.dp.ledger import gaussian_epsilon\n"
        "from flwr_privacy.extras import MissingExtraError\n"
        "try:\n    gaussian_epsilon([(1.0, 0.1, 10)], delta=1e-5, accountant='rdp')\n"
        "except MissingExtraError as e:\n    print(repr(str(e)))\n"
    )
    assert 'pip install "flower-privacy[dp]"' in ast.literal_eval(_run(code))


def test_requires_passes_other_errors_and_refuses_unknown_extras() -> None:
    with pytest.raises(MissingExtraError, match=r"flower-privacy\[he\]") as info:
        with requires("he", "a test layer"):
            import flwr_privacy_no_such_module  # noqa: F401
    assert isinstance(info.value, ImportError)  # callers catching ImportError still do
    with pytest.raises(ZeroDivisionError), requires("he", "a test layer"):
        _ = 1 / 0
    with pytest.raises(ValueError, match="unknown extra 'gpu'"), requires("gpu", "x"):
        pass


def test_pyproject_extras_install_what_extras_py_says() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def dists(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in reqs}

    for extra, modules in EXTRAS.items():
        assert {DIST.get(m, m) for m in modules} <= dists(extras[extra]), extra
    core = dists(project["dependencies"])
    assert core == {"flwr", "numpy", "cryptography"}
    assert not core & {DIST.get(m, m) for m in HEAVY}
    # the app extra (README's install, via dev) has every layer
    assert "flower-privacy[he,dp,robust,attacks]" in extras["app"]
    assert "flower-privacy[app,docs]" in extras["dev"]  # and the docs site's tools
    assert {"mkdocs", "mkdocs-material", "mkdocstrings", "selenium"} <= dists(extras["docs"])
