"""Long-term client identities for SecAgg+ against a lying server: signing keys and a roster.

The trust anchor sits with the federation operator, not the server: ``make_roster``
(``python -m flwr_privacy.keys roster``) gives every client an Ed25519 signing key and
writes the roster (identity -> verifying key). Each SuperNode gets its own key file and the
roster through its **node config** (``secagg-key``, ``secagg-roster``): the run config and
every message pass through the server, so neither can carry the anchor. Signatures are the
``cryptography`` package's Ed25519; nothing here is a hand-written primitive.

``Trust.simulated`` is the stand-in for a simulation: the server layer writes per-run keys to
a private temporary directory that the simulated clients read. The server then holds every
client's key, so it is *simulated* trust and is reported as such.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flwr_privacy.secagg.crypto import SecAggError

__all__ = [
    "KEY_FORMAT",
    "NODE_KEY",
    "NODE_ROSTER",
    "ROSTER_FILE",
    "ROSTER_FORMAT",
    "Roster",
    "SIGNATURE_BYTES",
    "SigningKey",
    "SimulatedRoster",
    "Trust",
    "check_name",
    "enrol",
    "make_roster",
]

ROSTER_FILE = "roster.json"
ROSTER_FORMAT = "flwr-privacy-secagg-roster/1"
KEY_FORMAT = "flwr-privacy-secagg-key/1"
SIGNATURE_BYTES = 64
NODE_KEY, NODE_ROSTER = "secagg-key", "secagg-roster"  # node-config keys of the trust anchor
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RAW = serialization.Encoding.Raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str, path: Path) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise SecAggError(f"{path}: {what} is not base64") from None


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise SecAggError(
            f"identity {name!r} is invalid; allowed: 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class SigningKey:
    """One client's long-term Ed25519 key and the identity the roster knows it by."""

    identity: str
    private: bytes

    @classmethod
    def generate(cls, identity: str) -> SigningKey:
        sk = Ed25519PrivateKey.generate()
        raw = sk.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return cls(check_name(identity), raw)

    @property
    def public(self) -> bytes:
        key = Ed25519PrivateKey.from_private_bytes(self.private).public_key()
        return key.public_bytes(_RAW, serialization.PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.private).sign(message)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": KEY_FORMAT, "identity": self.identity, "ed25519": _b64(self.private)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        path = Path(path)
        data = _read_json(path, "signing key")
        if data.get("format") != KEY_FORMAT:
            raise SecAggError(f"{path} is no SecAgg+ signing key (format {data.get('format')!r}; "
                              f"expected {KEY_FORMAT!r}: make one with "
                              "'python -m flwr_privacy.keys roster')")  # fmt: skip
        raw = _unb64(data.get("ed25519"), "the key", path)
        if len(raw) != 32:
            raise SecAggError(f"{path}: an Ed25519 private key has 32 bytes, got {len(raw)}")
        return cls(check_name(str(data.get("identity"))), raw)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SecAggError(f"the SecAgg+ {what} {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise SecAggError(f"the SecAgg+ {what} {path} is unreadable ({e})") from None
    if not isinstance(data, dict):
        raise SecAggError(f"the SecAgg+ {what} {path} is not a JSON object")
    return data


@dataclass(frozen=True)
class Roster:
    """Identity -> Ed25519 verifying key of every client the operator admits."""

    members: Mapping[str, bytes]

    def verify(self, identity: str, message: bytes, signature: object, *, who: str) -> None:
        """SecAggError naming ``who`` unless ``signature`` is ``identity``'s on ``message``."""
        if identity not in self.members:
            raise SecAggError(f"{who}: identity {identity!r} is not in the roster (unknown node)")
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            raise SecAggError(f"{who}: a signature must be {SIGNATURE_BYTES} bytes")
        try:
            Ed25519PublicKey.from_public_bytes(self.members[identity]).verify(signature, message)
        except InvalidSignature:
            raise SecAggError(f"{who}: bad signature for roster identity {identity!r}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        members = {k: _b64(v) for k, v in sorted(self.members.items())}
        path.write_text(json.dumps({"format": ROSTER_FORMAT, "members": members}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Roster:
        path = Path(path)
        data = _read_json(path, "roster")
        if data.get("format") != ROSTER_FORMAT or not isinstance(data.get("members"), dict):
            raise SecAggError(f"{path} is no SecAgg+ roster (expected format {ROSTER_FORMAT!r})")
        members = {}
        for name, key in data["members"].items():
            raw = _unb64(key, f"the key of {name!r}", path)
            if len(raw) != 32:
                raise SecAggError(f"{path}: the key of {name!r} must be 32 bytes")
            members[check_name(name)] = raw
        return cls(members)


def make_roster(identities: Iterable[str], out_dir: str | Path) -> Roster:
    """Write ``<identity>.key`` (mode 0600) for each client and ``roster.json``; return it."""
    out = Path(out_dir)
    names = [check_name(n) for n in identities]
    if len(set(names)) != len(names) or not names:
        raise SecAggError("a roster needs at least one identity, each named once")
    members = {}
    for name in names:
        key = SigningKey.generate(name)
        key.save(out / f"{name}.key")
        members[name] = key.public
    roster = Roster(members)
    roster.save(out / ROSTER_FILE)
    return roster


def enrol(directory: str | Path, identity: str) -> tuple[Path, Path]:
    """Add one client to the roster in ``directory`` (made if new): its key path, the roster's.

    For operators who admit clients one at a time; ``make_roster`` makes a whole roster.
    """
    d = Path(directory)
    path = d / ROSTER_FILE
    members = dict(Roster.load(path).members) if path.exists() else {}
    key = SigningKey.generate(identity)
    members[key.identity] = key.public
    key_path = key.save(d / f"{key.identity}.key")
    tmp = Roster(members).save(d / f".{ROSTER_FILE}.tmp")
    os.replace(tmp, path)
    return key_path, path


@dataclass(frozen=True)
class Trust:
    """What a client signs with and checks against; ``simulated`` when the server dealt it."""

    key: SigningKey
    roster: Roster
    simulated: bool = False

    def __post_init__(self) -> None:
        if self.roster.members.get(self.key.identity) != self.key.public:
            raise SecAggError(
                f"the signing key of {self.key.identity!r} is not the one the roster lists for "
                "it: give this SuperNode its own key and the roster of the same generation"
            )

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> Trust | None:
        """The operator's anchor from node config, or None when neither key is set."""
        key, roster = node_config.get(NODE_KEY), node_config.get(NODE_ROSTER)
        if key is None and roster is None:
            return None
        if key is None or roster is None:
            missing = NODE_KEY if key is None else NODE_ROSTER
            raise SecAggError(f"node config sets only one of '{NODE_KEY}' and '{NODE_ROSTER}': "
                              f"add '{missing}'")  # fmt: skip
        return cls(SigningKey.load(str(key)), Roster.load(str(roster)))

    @classmethod
    def simulated_from(cls, directory: str | Path, identity: str) -> Trust:
        d = Path(directory)
        return cls(SigningKey.load(d / f"{identity}.key"), Roster.load(d / ROSTER_FILE), True)


class SimulatedRoster:
    """Per-run keys a simulation's server layer deals (simulated trust: it holds them all).

    Written to a private temporary directory (mode 0700) that simulated clients on this
    machine read; removed when the process exits.
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="flwr-privacy-secagg-sim-"))
        os.chmod(self.directory, 0o700)
        atexit.register(shutil.rmtree, self.directory, True)
        self._members: dict[str, bytes] = {}

    @staticmethod
    def identity(node: int) -> str:
        return f"node-{node}"

    def admit(self, nodes: Iterable[int]) -> None:
        new = [self.identity(n) for n in nodes if self.identity(n) not in self._members]
        for name in new:
            key = SigningKey.generate(name)
            key.save(self.directory / f"{name}.key")
            self._members[name] = key.public
        if new:  # replace the roster atomically: clients may be reading it
            tmp = Roster(dict(self._members)).save(self.directory / f".{ROSTER_FILE}.tmp")
            os.replace(tmp, self.directory / ROSTER_FILE)
