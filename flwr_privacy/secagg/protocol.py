"""SecAgg+ stages as pure functions: a client's session and the server's round.

Per round (Bell et al., CCS 2020, with the active-adversary checks of Bonawitz et al.,
CCS 2017, section 4 and appendix):

1. keys: the server announces the round's parameters (``RoundParams``: session, the
   participants and their roster identities, graph seed and degree, threshold, modulus,
   encoding); every client derives the graph itself, checks the parameters against its
   own floors, makes two X25519 key pairs and a self-mask seed ``b``, and signs an
   advertisement (its keys and a commitment to ``b``, over the parameters' digest) with
   its roster key.
2. shares: each client verifies its neighbours' advertisements against the roster (a
   substituted key, an unknown node, or a neighbour shown other parameters fails the
   signature) and Shamir-shares ``b`` and its masking key ``s`` among them (threshold
   ``t``), each share encrypted to that neighbour; the server relays.
3. masked input: ``y_i = x_i + PRG(b_i) + sum_j +-PRG(s_ij) mod R`` over **every**
   neighbour it shared with; a missing ciphertext refuses the round (withholding).
4. consistency: each survivor signs the survivor set ``U`` the server announces, once a
   round, if ``U`` names it and holds at least ``t`` of its neighbours.
5. unmask: a client reveals only after holding a quorum ``q`` of roster signatures by
   members of ``U`` on that same ``U`` (``2q > |P| + t - 1``: with at most ``t - 1``
   colluders no two different sets can both be signed), and then per neighbour exactly
   the kind ``U`` says: the share of ``b`` if it is in ``U``, of ``s`` if not. The server
   checks every rebuilt ``b`` against its signed commitment and ``s`` against its key,
   leaving bad shares out.

Everything a client holds between stages is in ``ClientSession`` (kept in its Flower
``context.state``); everything here checks its inputs and raises ``SecAggError``
naming the node.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from cryptography.fernet import InvalidToken
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)

from flwr_privacy.secagg.crypto import (
    KEY_BYTES,
    SESSION_BYTES,
    KeyPair,
    SecAggError,
    agree,
    check_public_key,
    derive,
    fernet_key,
    mask,
    new_seed,
    public_key_of,
)
from flwr_privacy.secagg.encoding import modulus_bits, pack, unpack
from flwr_privacy.secagg.floors import ClientFloors
from flwr_privacy.secagg.graph import SEED_BYTES, harary
from flwr_privacy.secagg.identity import SIGNATURE_BYTES, Trust

STAGES = ("keys", "shares", "masked", "signed", "unmasked")
SHARE_LABEL, MASK_LABEL, SELF_LABEL = b"share", b"mask", b"self"
PublicKeys = tuple[bytes, bytes]  # (c: share encryption, s: masking)
_DOMAIN = b"flwr-privacy/secagg/v2/"
MAX_COMBINATIONS = 64  # t-subsets tried when a rebuilt secret fails its check


def ids_to_bytes(ids: Iterable[int]) -> bytes:
    """Node ids (unsigned 64-bit) as bytes: Flower records hold only signed 64-bit ints."""
    return b"".join(int(i).to_bytes(8, "little", signed=False) for i in ids)


def bytes_to_ids(data: bytes) -> list[int]:
    if len(data) % 8:
        raise SecAggError("a node-id list must be a multiple of 8 bytes")
    return [int.from_bytes(data[p : p + 8], "little", signed=False) for p in range(0, len(data), 8)]


def _u64(n: int) -> bytes:
    return int(n).to_bytes(8, "little", signed=False)


@dataclass(frozen=True)
class RoundParams:
    """Everything the server fixes for one round; each client checks and signs its digest.

    ``encoding`` holds the values the client encodes its update with (fixed point:
    ``clip``, ``quant-bits``, ``weight-scale``, ``weight-key``; distributed DP: the
    ``ddg-*`` plan). ``max_dropouts``: a survivor set may be at most that much smaller
    than the participants (distributed DP sizes its noise for it; else ``|P|``).
    """

    session: bytes
    round: int
    participants: tuple[int, ...]
    identities: tuple[str, ...]
    degree: int
    graph_seed: bytes
    threshold: int
    mod_bits: int
    size: int
    encoding: Mapping[str, Any] = field(default_factory=dict)
    max_dropouts: int | None = None

    def __post_init__(self) -> None:
        if len(self.participants) != len(self.identities):
            raise SecAggError("the participant and identity lists do not pair up")

    def digest(self) -> bytes:
        """SHA-256 of every field (cached: it is signed and checked many times a round)."""
        cached = self.__dict__.get("_digest")
        if cached is None:
            cached = self._compute_digest()
            object.__setattr__(self, "_digest", cached)
        return cached

    def _compute_digest(self) -> bytes:
        body = {
            "session": self.session.hex(),
            "round": self.round,
            "participants": [str(p) for p in self.participants],
            "identities": list(self.identities),
            "degree": self.degree,
            "graph-seed": self.graph_seed.hex(),
            "threshold": self.threshold,
            "mod-bits": self.mod_bits,
            "size": self.size,
            "encoding": {k: self.encoding[k] for k in sorted(self.encoding)},
            "max-dropouts": self.max_dropouts,
        }
        return hashlib.sha256(_DOMAIN + json.dumps(body, sort_keys=True).encode()).digest()

    def graph(self) -> dict[int, set[int]]:
        return harary(self.participants, self.degree, self.graph_seed)

    def identity_of(self, node: int) -> str:
        index = self.__dict__.get("_index")
        if index is None:  # node -> identity, built once (a list search per call was O(n))
            index = dict(zip(self.participants, self.identities, strict=True))
            object.__setattr__(self, "_index", index)
        if node not in index:
            raise SecAggError(f"node {node} is no participant of this round")
        return index[node]

    @property
    def quorum(self) -> int:
        """Signatures on one survivor set a client needs before revealing any share."""
        return max(self.threshold, (len(self.participants) + self.threshold - 1) // 2 + 1)

    @property
    def min_survivors(self) -> int:
        """Fewest survivors a client accepts: ``|P| - max_dropouts``, else ``t + 1``."""
        if self.max_dropouts is None:
            return self.threshold + 1
        return len(self.participants) - self.max_dropouts

    def to_record(self) -> dict[str, Any]:
        return {
            "participants": ids_to_bytes(self.participants),
            "identities": list(self.identities),
            "degree": self.degree,
            "graph-seed": self.graph_seed,
            "threshold": self.threshold,
            "mod-bits": self.mod_bits,
            "size": self.size,
            "max-dropouts": -1 if self.max_dropouts is None else self.max_dropouts,
            **{f"enc.{k}": v for k, v in self.encoding.items()},
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any], *, session: bytes, round_: int, who: str
                    ) -> RoundParams:  # fmt: skip
        """The parameters a stage record announces; SecAggError naming the bad key."""
        def get(key: str, kind: type) -> Any:
            if key not in r:
                raise SecAggError(f"{who}: SecAgg record lacks '{key}'")
            v = r[key]
            if not isinstance(v, kind) or isinstance(v, bool):
                raise SecAggError(f"{who}: SecAgg record key '{key}' must be {kind.__name__}")
            return v

        identities = r.get("identities")
        if not isinstance(identities, list) or not all(isinstance(i, str) for i in identities):
            raise SecAggError(f"{who}: SecAgg record key 'identities' must be a list of str")
        drops = get("max-dropouts", int)
        return cls(
            session=session, round=round_,
            participants=tuple(bytes_to_ids(get("participants", bytes))),
            identities=tuple(identities), degree=get("degree", int),
            graph_seed=get("graph-seed", bytes), threshold=get("threshold", int),
            mod_bits=get("mod-bits", int), size=get("size", int),
            encoding={k[4:]: v for k, v in r.items() if k.startswith("enc.")},
            max_dropouts=None if drops < 0 else drops,
        )  # fmt: skip


class Advert(NamedTuple):
    """A client's signed round keys: share-encryption key, masking key, seed commitment."""

    c: bytes
    s: bytes
    commit: bytes
    signature: bytes


def seed_commitment(seed: bytes, session: bytes, round_: int, node: int) -> bytes:
    """SHA-256 binding of the self-mask seed: the server checks a rebuilt ``b`` against it."""
    return hashlib.sha256(_DOMAIN + b"seed|" + session + _u64(round_) + _u64(node) + seed).digest()


def advert_message(digest: bytes, node: int, c: bytes, s: bytes, commit: bytes) -> bytes:
    return _DOMAIN + b"keys|" + digest + _u64(node) + c + s + commit


def survivors_message(digest: bytes, survivors: Sequence[int]) -> bytes:
    return _DOMAIN + b"survivors|" + digest + hashlib.sha256(ids_to_bytes(sorted(survivors))
                                                            ).digest()  # fmt: skip


def _sign(i: int, j: int) -> int:
    return 1 if i < j else -1


def pair_mask(
    private_s: bytes, public_s: bytes, session: bytes, round_: int, i: int, j: int, size: int
) -> np.ndarray:
    """The mask ``i`` adds for neighbour ``j`` (``+PRG`` if i < j else ``-PRG``), mod 2^32."""
    stream = _pair_stream(private_s, public_s, session, round_, i, j, size)
    return stream if _sign(i, j) > 0 else np.negative(stream)  # uint32 wraps mod 2^32


def _pair_stream(
    private_s: bytes, public_s: bytes, session: bytes, round_: int, i: int, j: int, size: int
) -> np.ndarray:
    """The PRG output of the pair ``(i, j)``, unsigned (symmetric in the pair)."""
    return mask(agree(private_s, public_s, MASK_LABEL, session, round_, i, j), size)


def _apply_pair(y: np.ndarray, stream: np.ndarray, i: int, j: int, *, remove: bool = False) -> None:
    """Add (or, ``remove``, subtract) in place the mask ``i`` adds for ``j``: no negated copy."""
    if (_sign(i, j) > 0) != remove:
        y += stream
    else:
        y -= stream


def self_mask(seed: bytes, session: bytes, round_: int, node: int, size: int) -> np.ndarray:
    return mask(derive(seed, SELF_LABEL, session, round_, node), size)


def check_params(params: RoundParams, node: int, trust: Trust, floors: ClientFloors) -> list[int]:
    """This client's neighbours if ``params`` pass its checks and floors; else SecAggError."""
    who = f"node {node}"
    if len(params.session) != SESSION_BYTES or len(params.graph_seed) != SEED_BYTES:
        raise SecAggError(f"{who}: the session id must be {SESSION_BYTES} bytes and the graph "
                          f"seed {SEED_BYTES}: refused")  # fmt: skip
    if len(set(params.participants)) != len(params.participants) or len(
        set(params.identities)
    ) != len(params.identities):
        raise SecAggError(f"{who}: a node or identity is listed twice among the participants")
    mine = [i for i, p in enumerate(params.participants) if p == node]
    if not mine or params.identities[mine[0]] != trust.key.identity:
        raise SecAggError(f"{who}: the participants do not list this node as "
                          f"{trust.key.identity!r} (its roster identity): refused")  # fmt: skip
    unknown = [i for i in params.identities if i not in trust.roster.members]
    if unknown:
        raise SecAggError(
            f"{who}: participants {unknown[:5]} are not in the roster (unknown nodes)"
        )
    if params.size < 1 or params.degree < 1:
        raise SecAggError(f"{who}: size and degree must be >= 1")
    neighbours = sorted(params.graph()[node])
    kind = params.encoding.get("kind")
    quant = params.encoding.get("quant-bits") if kind == "fixed" else None
    if kind not in ("fixed", "ddg") or (kind == "fixed" and not isinstance(quant, int)):
        raise SecAggError(f"{who}: unknown or incomplete encoding {dict(params.encoding)!r}")
    sigma = params.encoding.get("ddg-sigma") if kind == "ddg" else None
    if kind == "ddg" and not isinstance(sigma, float):
        raise SecAggError(f"{who}: the distributed DP plan lacks a float 'ddg-sigma'")
    floors.check(node=node, threshold=params.threshold, neighbours=len(neighbours),
                 mod_bits=params.mod_bits, quant_bits=quant, sigma=sigma)  # fmt: skip
    if quant is not None and params.mod_bits < modulus_bits(quant, len(params.participants)):
        raise SecAggError(f"{who}: modulus 2^{params.mod_bits} cannot hold the sum of "
                          f"{len(params.participants)} {quant}-bit values: refused")  # fmt: skip
    if kind == "ddg" and len(neighbours) != len(params.participants) - 1:
        raise SecAggError(f"{who}: distributed DP needs the complete graph (every participant a "
                          "neighbour: only then is the released sum over the whole survivor set) "
                          f"but this node has {len(neighbours)} of {len(params.participants) - 1}")
    if params.max_dropouts is not None and params.min_survivors < params.threshold + 1:
        raise SecAggError(f"{who}: max-dropouts {params.max_dropouts} allows fewer survivors "
                          f"than t + 1 = {params.threshold + 1}")  # fmt: skip
    return neighbours


@dataclass
class ClientSession:
    """One client's SecAgg+ state for one round (secrets never leave it unshared)."""

    node: int
    params: RoundParams
    neighbours: list[int]
    c: KeyPair
    s: KeyPair
    seed: bytes
    stage: str = "keys"
    public: dict[int, PublicKeys] = field(default_factory=dict)
    ciphertexts: dict[int, bytes] = field(default_factory=dict)
    survivors: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, *, node: int, params: RoundParams, trust: Trust,
              floors: ClientFloors | None = None) -> ClientSession:  # fmt: skip
        """Stage 1: check the round against this client's floors; fresh keys and seed."""
        neighbours = check_params(params, node, trust, floors or ClientFloors())
        return cls(node=node, params=params, neighbours=neighbours, c=KeyPair.generate(),
                   s=KeyPair.generate(), seed=new_seed())  # fmt: skip

    @property
    def round(self) -> int:
        return self.params.round

    @property
    def session(self) -> bytes:
        return self.params.session

    @property
    def threshold(self) -> int:
        return self.params.threshold

    @property
    def size(self) -> int:
        return self.params.size

    @property
    def mod_bits(self) -> int:
        return self.params.mod_bits

    @property
    def public_keys(self) -> PublicKeys:
        return self.c.public, self.s.public

    def advert(self, trust: Trust) -> Advert:
        """This round's keys and seed commitment, signed with the client's roster key."""
        commit = seed_commitment(self.seed, self.session, self.round, self.node)
        message = advert_message(self.params.digest(), self.node, self.c.public, self.s.public,
                                 commit)  # fmt: skip
        return Advert(self.c.public, self.s.public, commit, trust.key.sign(message))

    def _expect(self, stage: str, round_: int, session: bytes) -> None:
        if round_ != self.round or session != self.session:
            raise SecAggError(
                f"node {self.node}: message of round {round_} (session {session.hex()[:8]}) "
                f"but this node is in round {self.round}: replayed or misaddressed"
            )
        if self.stage != stage:
            raise SecAggError(
                f"node {self.node}: stage after '{stage}' requested, but this node is past "
                f"'{self.stage}' in round {self.round}: out of order or replayed"
            )

    def share_keys(self, adverts: Mapping[int, Advert], trust: Trust, *, round_: int,
                   session: bytes) -> dict[int, bytes]:  # fmt: skip
        """Stage 2: verify every neighbour's signed keys; encrypted shares of ``b`` and ``s``.

        Keys from *every* neighbour of the signed graph are required: a server that hid some
        could otherwise cut the graph the clients mask over into small pieces and unmask
        each piece's sum (a keys-stage dropout makes the server restart without it).
        """
        self._expect("keys", round_, session)
        unknown = set(adverts) - set(self.neighbours)
        if unknown:
            raise SecAggError(f"node {self.node}: keys of non-neighbours {sorted(unknown)}")
        missing = sorted(set(self.neighbours) - set(adverts))
        if missing:
            raise SecAggError(
                f"node {self.node}: no keys from neighbours {missing[:8]} of the round's graph "
                "(hidden by the server, or they dropped): refusing to share with fewer"
            )
        present = sorted(adverts)
        digest = self.params.digest()
        checked = {}
        for j in present:
            a = adverts[j]
            c, s = check_public_key(a.c, j), check_public_key(a.s, j)
            if not isinstance(a.commit, bytes) or len(a.commit) != KEY_BYTES:
                raise SecAggError(f"node {j}: the seed commitment must be {KEY_BYTES} bytes")
            trust.roster.verify(
                self.params.identity_of(j), advert_message(digest, j, c, s, a.commit),
                a.signature,
                who=f"node {self.node}: the keys of neighbour {j} (substituted keys, or that "
                "node was shown other round parameters)",
            )  # fmt: skip
            checked[j] = (c, s)
        b_shares = create_shares(self.seed, self.threshold, len(present))
        s_shares = create_shares(self.s.private, self.threshold, len(present))
        out = {}
        for j, b_share, s_share in zip(present, b_shares, s_shares, strict=True):
            key = agree(
                self.c.private, checked[j][0], SHARE_LABEL, self.session, self.round, self.node, j
            )
            plain = share_keys_plaintext_concat(self.node, j, b_share, s_share)
            out[j] = encrypt(fernet_key(key), plain)
        self.public = checked
        self.stage = "shares"
        return out

    def _open(self, src: int, ciphertext: bytes) -> tuple[bytes, bytes]:
        """The (b share, s share) ``src`` sent this node; SecAggError if forged or misaddressed."""
        if src not in self.public:
            raise SecAggError(
                f"node {self.node}: shares from node {src}, which is no neighbour "
                "with keys this round"
            )
        key = agree(
            self.c.private,
            self.public[src][0],
            SHARE_LABEL,
            self.session,
            self.round,
            self.node,
            src,
        )
        try:
            plain = decrypt(fernet_key(key), ciphertext)
            got_src, got_dst, b_share, s_share = share_keys_plaintext_separate(plain)
        except (InvalidToken, TypeError, ValueError, IndexError):
            raise SecAggError(
                f"node {self.node}: the shares from node {src} do not decrypt under this round's "
                "key (forged, corrupted, or of another round)"
            ) from None
        if (got_src, got_dst) != (src, self.node):
            raise SecAggError(
                f"node {self.node}: shares from node {src} are addressed {got_src} -> {got_dst}"
            )
        return b_share, s_share

    def check_ciphertexts(self, ciphertexts: Mapping[int, bytes], *, round_: int,
                          session: bytes) -> None:  # fmt: skip
        """Stage 3's precondition (checked before training): shares from every neighbour this
        node shared with, each opening under this round's key."""
        self._expect("shares", round_, session)
        if self.ciphertexts and dict(ciphertexts) == self.ciphertexts:
            return  # these very ciphertexts were opened before training
        missing = sorted(set(self.public) - set(ciphertexts))
        if missing:
            raise SecAggError(
                f"node {self.node}: no shares arrived from neighbours {missing[:8]} it shared "
                "with (withheld by the server, or they dropped): refusing to mask with fewer"
            )
        for src, ct in ciphertexts.items():
            self._open(src, ct)  # refuse the round before masking if any is forged
        self.ciphertexts = {j: ciphertexts[j] for j in self.public}

    def mask_input(
        self, values: np.ndarray, ciphertexts: Mapping[int, bytes], *, round_: int, session: bytes
    ) -> bytes:
        """Stage 3: the packed masked vector, masked with every neighbour it shared with."""
        self.check_ciphertexts(ciphertexts, round_=round_, session=session)
        values = np.asarray(values)
        if values.shape != (self.size,) or values.dtype != np.uint32:
            raise SecAggError(f"node {self.node}: input must be {self.size} uint32 values")
        if self.mod_bits < 32 and int(values.max(initial=0)) >= (1 << self.mod_bits):
            raise SecAggError(f"node {self.node}: input values exceed 2^{self.mod_bits}")
        y = values + self_mask(self.seed, self.session, self.round, self.node, self.size)
        for j in sorted(self.public):
            stream = _pair_stream(
                self.s.private, self.public[j][1], self.session, self.round, self.node, j, self.size
            )
            _apply_pair(y, stream, self.node, j)
        self.ciphertexts = {j: ciphertexts[j] for j in self.public}
        self.stage = "masked"
        return pack(y & np.uint32((1 << self.mod_bits) - 1), self.mod_bits)

    def _check_survivors(self, survivors: Iterable[int]) -> list[int]:
        alive = sorted(set(survivors))
        who = f"node {self.node}"
        outside = set(alive) - set(self.params.participants)
        if outside:
            raise SecAggError(f"{who}: the survivor set names non-participants {sorted(outside)}")
        if self.node not in alive:
            raise SecAggError(f"{who}: the server calls this node dropped")
        near = [j for j in alive if j in self.public]
        if len(near) < self.threshold:
            raise SecAggError(f"{who}: only {len(near)} of its neighbours survive, fewer than the "
                              f"threshold {self.threshold}: refusing")  # fmt: skip
        if len(alive) < self.params.min_survivors:
            raise SecAggError(f"{who}: {len(alive)} survivors, fewer than the "
                              f"{self.params.min_survivors} the round's dropout rule allows")
        return alive

    def sign_survivors(self, survivors: Iterable[int], trust: Trust, *, round_: int,
                       session: bytes) -> bytes:  # fmt: skip
        """Stage 4: sign the announced survivor set, once a round, if it passes the checks."""
        self._expect("masked", round_, session)
        alive = self._check_survivors(survivors)
        self.stage = "signed"  # before answering: a second set is never signed
        self.survivors = alive
        return trust.key.sign(survivors_message(self.params.digest(), alive))

    def unmask(self, survivors: Iterable[int], signatures: Mapping[int, bytes], trust: Trust, *,
               round_: int, session: bytes) -> dict[int, bytes]:  # fmt: skip
        """Stage 5: with a quorum of signatures on the set it signed, one share per neighbour.

        The share of ``b`` for a neighbour in the signed set, of ``s`` for one outside it;
        answered once. A different set, a short quorum or a bad signature is refused.
        """
        self._expect("signed", round_, session)
        alive = sorted(set(survivors))
        who = f"node {self.node}"
        if alive != self.survivors:
            raise SecAggError(f"{who}: the unmask request names another survivor set than the one "
                              "this node signed: refused")  # fmt: skip
        signers = sorted(set(signatures) & set(alive))
        if set(signatures) - set(alive):
            raise SecAggError(f"{who}: signatures from nodes outside the survivor set")
        q = self.params.quorum
        if len(signers) < q:
            raise SecAggError(f"{who}: {len(signers)} signatures on the survivor set, fewer than "
                              f"the quorum {q} of {len(self.params.participants)} participants: "
                              "refusing to unmask")  # fmt: skip
        message = survivors_message(self.params.digest(), alive)
        valid, bad = 0, []
        for j in signers:  # a quorum of valid ones is all it needs: stop there
            try:
                trust.roster.verify(self.params.identity_of(j), message, signatures[j],
                                    who=f"{who}: the survivor-set signature of node {j}")
                valid += 1
            except SecAggError:
                bad.append(j)
            if valid >= q:
                break
        if valid < q:
            raise SecAggError(f"{who}: {valid} valid signatures on the survivor set, fewer than "
                              f"the quorum {q}; bad signature from nodes {bad[:8]}: refusing to "
                              "unmask")  # fmt: skip
        self.stage = "unmasked"  # before answering: a second request is always refused
        out = {}
        for j in sorted(self.public):
            b_share, s_share = self._open(j, self.ciphertexts[j])
            out[j] = b_share if j in alive else s_share
        return out

    def to_record(self) -> dict[str, Any]:
        """Flat scalars, bytes and lists: what a Flower ConfigRecord holds."""
        pub = sorted(self.public)
        cts = sorted(self.ciphertexts)
        return {
            "node": ids_to_bytes([self.node]),
            "round": self.round,
            "session": self.session,
            **{f"p.{k}": v for k, v in self.params.to_record().items()},
            "c-sk": self.c.private,
            "c-pk": self.c.public,
            "s-sk": self.s.private,
            "s-pk": self.s.public,
            "seed": self.seed,
            "stage": self.stage,
            "public-ids": ids_to_bytes(pub),
            "public-c": [self.public[j][0] for j in pub],
            "public-s": [self.public[j][1] for j in pub],
            "ct-ids": ids_to_bytes(cts),
            "cts": [self.ciphertexts[j] for j in cts],
            "survivors": ids_to_bytes(self.survivors),
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> ClientSession:
        pub = bytes_to_ids(r["public-ids"])
        cts = bytes_to_ids(r["ct-ids"])
        node = bytes_to_ids(r["node"])[0]
        params = RoundParams.from_record(
            {k[2:]: v for k, v in r.items() if k.startswith("p.")},
            session=r["session"], round_=int(r["round"]), who=f"node {node}",
        )  # fmt: skip
        return cls(
            node=node,
            params=params,
            neighbours=sorted(params.graph()[node]),
            c=KeyPair(r["c-sk"], r["c-pk"]),
            s=KeyPair(r["s-sk"], r["s-pk"]),
            seed=r["seed"],
            stage=str(r["stage"]),
            public={j: (c, s) for j, c, s in zip(pub, r["public-c"], r["public-s"], strict=True)},
            ciphertexts=dict(zip(cts, r["cts"], strict=True)),
            survivors=bytes_to_ids(r["survivors"]),
        )


def _subsets(shares: list[bytes], t: int) -> Iterable[list[bytes]]:
    """The first ``t`` shares, then other ``t``-subsets (all of them, or a bounded sample)."""
    yield shares[:t]
    if len(shares) == t:
        return
    if math.comb(len(shares), t) <= MAX_COMBINATIONS:
        for combo in itertools.islice(itertools.combinations(shares, t), 1, None):
            yield list(combo)
        return
    rng = secrets.SystemRandom()
    for _ in range(MAX_COMBINATIONS - 1):
        yield rng.sample(shares, t)


def rebuild(shares: list[bytes], t: int, valid: Callable[[bytes], bool]) -> bytes | None:
    """A secret from ``t`` of ``shares`` that passes ``valid``; bad shares are left out."""
    for subset in _subsets(shares, t):
        try:
            secret = combine_shares(subset)
        except Exception:  # noqa: BLE001 - pycryptodome raises various errors on bad shares
            continue
        if valid(secret):
            return secret
    return None


@dataclass
class ServerRound:
    """What the server holds in one round: parameters, signed keys, relayed shares, inputs.

    It never holds a secret that is not reconstructed from ``t`` shares, and it asks
    every survivor once, with one signed survivor set for all.
    """

    params: RoundParams
    adverts: dict[int, Advert] = field(default_factory=dict)  # U1
    shares: dict[int, dict[int, bytes]] = field(default_factory=dict)  # U2: src -> dst -> ct
    masked: dict[int, np.ndarray] = field(default_factory=dict)  # U3
    signatures: dict[int, bytes] = field(default_factory=dict)  # U4: on survivors
    survivors: list[int] = field(default_factory=list)
    problems: dict[int, str] = field(default_factory=dict)  # node -> why it was left out
    # U2 by recipient (dst -> src -> ct), filled with ``shares``: scanning every sharer for each
    # node made stages 3 and 4 O(n^2) (a million lookups a stage at n = 1000).
    inbox: dict[int, dict[int, bytes]] = field(default_factory=dict, repr=False)
    graph: dict[int, set[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.graph:
            self.graph = self.params.graph()

    @property
    def round(self) -> int:
        return self.params.round

    @property
    def session(self) -> bytes:
        return self.params.session

    @property
    def threshold(self) -> int:
        return self.params.threshold

    @property
    def mod_bits(self) -> int:
        return self.params.mod_bits

    @property
    def size(self) -> int:
        return self.params.size

    @property
    def public(self) -> dict[int, PublicKeys]:
        return {n: (a.c, a.s) for n, a in self.adverts.items()}

    def refuse(self, node: int, reason: str) -> None:
        self.problems.setdefault(node, reason)

    def add_advert(self, node: int, advert: Advert) -> None:
        if node not in self.graph:
            raise SecAggError(f"node {node} is not in this round's graph")
        check_public_key(advert.c, node)
        check_public_key(advert.s, node)
        if len(advert.commit) != KEY_BYTES or len(advert.signature) != SIGNATURE_BYTES:
            raise SecAggError(f"node {node}: malformed seed commitment or signature")
        self.adverts[node] = advert

    def adverts_for(self, node: int) -> dict[int, Advert]:
        """The signed keys of ``node``'s neighbours (stage 2 input)."""
        return {j: self.adverts[j] for j in sorted(self.graph[node]) if j in self.adverts}

    def add_shares(self, node: int, ciphertexts: Mapping[int, bytes]) -> None:
        if node not in self.adverts:
            raise SecAggError(f"node {node} sent shares without having advertised keys")
        expected = set(self.adverts_for(node))
        if set(ciphertexts) != expected:
            raise SecAggError(
                f"node {node}: shares for {sorted(ciphertexts)}, expected its neighbours with "
                f"keys {sorted(expected)}"
            )
        if not all(isinstance(c, bytes) and c for c in ciphertexts.values()):
            raise SecAggError(f"node {node}: every share must be non-empty bytes")
        self.shares[node] = dict(ciphertexts)
        for dst, ct in ciphertexts.items():
            self.inbox.setdefault(dst, {})[node] = ct

    def incomplete(self) -> list[int]:
        """Nodes that advertised keys but shared with nobody: their neighbours cannot mask."""
        return sorted(set(self.adverts) - set(self.shares))

    def shares_for(self, node: int) -> dict[int, bytes]:
        """Ciphertexts addressed to ``node`` by neighbours that shared (stage 3 input)."""
        return dict(self.inbox.get(node, {}))

    def add_masked(self, node: int, data: bytes) -> None:
        if node not in self.shares:
            raise SecAggError(f"node {node} sent a masked input without having shared its keys")
        if node in self.masked:
            raise SecAggError(f"node {node} sent a second masked input this round")
        self.masked[node] = unpack(data, self.mod_bits, self.size, node)

    def close_inputs(self) -> list[int]:
        """Stage 4 input: the survivor set every survivor is asked to sign."""
        self.survivors = sorted(self.masked)
        return self.survivors

    def add_signature(self, node: int, signature: bytes) -> None:
        if node not in self.survivors:
            raise SecAggError(f"node {node} signed but is no survivor")
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            raise SecAggError(f"node {node}: a signature must be {SIGNATURE_BYTES} bytes")
        self.signatures[node] = signature

    def quorum_reached(self) -> bool:
        return len(self.signatures) >= self.params.quorum

    def _rebuild(self, target: int, shares: list[bytes], what: str,
                 valid: Callable[[bytes], bool]) -> bytes:  # fmt: skip
        if len(shares) < self.threshold:
            raise SecAggError(
                f"node {target}: {len(shares)} shares of its {what}, fewer than the threshold "
                f"{self.threshold}: the round cannot be unmasked"
            )
        secret = rebuild(shares, self.threshold, valid)
        if secret is None:
            raise SecAggError(f"node {target}: no {self.threshold} of its {len(shares)} {what} "
                              "shares rebuild a secret that matches its signed keys (corrupted "
                              "shares)")  # fmt: skip
        return secret

    def _valid_seed(self, node: int) -> Callable[[bytes], bool]:
        commit = self.adverts[node].commit
        return lambda seed: len(seed) == KEY_BYTES and secrets.compare_digest(
            seed_commitment(seed, self.session, self.round, node), commit)  # fmt: skip

    def _valid_key(self, node: int) -> Callable[[bytes], bool]:
        def valid(private: bytes) -> bool:
            try:
                return len(private) == KEY_BYTES and public_key_of(private) == self.adverts[node].s
            except ValueError:
                return False

        return valid

    def unmask(self, responses: Mapping[int, Mapping[int, bytes]]) -> np.ndarray:
        """The sum of the survivors' inputs mod R, from the survivors' share responses."""
        if not self.masked:
            raise SecAggError("no masked input arrived this round")
        alive = set(self.survivors or self.masked)
        by_target: dict[int, list[bytes]] = {}
        for responder, shares in responses.items():
            if responder not in alive:
                continue  # only survivors were asked
            for target, share in shares.items():
                if isinstance(share, bytes):
                    by_target.setdefault(target, []).append(share)
        total = np.zeros(self.size, dtype=np.uint32)
        for j in sorted(alive):
            total += self.masked[j]
        for j in sorted(alive):  # survivors: remove their self masks
            seed = self._rebuild(j, by_target.get(j, []), "self-mask seed", self._valid_seed(j))
            total -= self_mask(seed, self.session, self.round, j, self.size)
        dropped = sorted(set(self.shares) - alive)
        for j in dropped:  # dropped after sharing: remove their pairwise masks
            private_s = self._rebuild(j, by_target.get(j, []), "masking key", self._valid_key(j))
            for i in sorted(i for i in self.shares[j] if i in alive):  # masked with j
                stream = _pair_stream(
                    private_s, self.adverts[i].s, self.session, self.round, i, j, self.size
                )
                _apply_pair(total, stream, i, j, remove=True)
        return total & np.uint32((1 << self.mod_bits) - 1)


def simulated_trust(nodes: Iterable[int]) -> dict[int, Trust]:
    """In-memory roster and keys for ``nodes`` (tests and cost benchmarks: simulated trust)."""
    from flwr_privacy.secagg.identity import Roster, SigningKey

    keys = {n: SigningKey.generate(f"node-{n}") for n in nodes}
    roster = Roster({k.identity: k.public for k in keys.values()})
    return {n: Trust(k, roster, simulated=True) for n, k in keys.items()}


def simulate(
    inputs: Mapping[int, np.ndarray],
    *,
    threshold: int,
    degree: int,
    mod_bits: int,
    drop_before_shares: Iterable[int] = (),
    drop_before_masked: Iterable[int] = (),
    drop_before_signing: Iterable[int] = (),
    round_: int = 1,
    floors: ClientFloors | None = None,
    trust: Mapping[int, Trust] | None = None,
) -> tuple[np.ndarray, ServerRound]:
    """Every party of one round in one process (tests and cost benchmarks); returns the sum.

    ``drop_before_shares`` advertise keys and vanish (the server restarts the round without
    them, as ``SecAggPlus`` does); ``drop_before_masked`` share and vanish before their
    masked input; ``drop_before_signing`` mask and vanish before signing the survivors.
    """
    from flwr_privacy.secagg.crypto import new_session
    from flwr_privacy.secagg.graph import new_graph_seed

    nodes = sorted(inputs)
    size = len(next(iter(inputs.values())))
    trust = trust or simulated_trust(nodes)
    floors = floors or ClientFloors(min_neighbours=1, min_quant_bits=1, min_mod_bits=1)
    early = set(drop_before_shares)
    late, later = set(drop_before_masked), set(drop_before_signing)
    members = nodes
    for attempt in range(2):
        params = RoundParams(
            session=new_session(), round=round_, participants=tuple(members),
            identities=tuple(trust[n].key.identity for n in members), degree=degree,
            graph_seed=new_graph_seed(), threshold=threshold, mod_bits=mod_bits, size=size,
            encoding={"kind": "fixed", "quant-bits": max(1, mod_bits - math.ceil(
                math.log2(max(len(members), 1))))},
        )  # fmt: skip
        server = ServerRound(params)
        clients = {n: ClientSession.start(node=n, params=params, trust=trust[n], floors=floors)
                   for n in members}  # fmt: skip
        for n, c in clients.items():
            server.add_advert(n, c.advert(trust[n]))
        for n, c in clients.items():
            if n not in early:
                cts = c.share_keys(server.adverts_for(n), trust[n], round_=round_,
                                   session=params.session)  # fmt: skip
                server.add_shares(n, cts)
        if not server.incomplete() or attempt:
            break
        members = [n for n in members if n not in early]  # restart without the dropped
        early = set()
    for n, c in clients.items():
        if n not in early | late:
            server.add_masked(
                n, c.mask_input(inputs[n], server.shares_for(n), round_=round_,
                                session=params.session),
            )  # fmt: skip
    alive = server.close_inputs()
    for n in alive:
        if n not in later:
            sig = clients[n].sign_survivors(alive, trust[n], round_=round_, session=params.session)
            server.add_signature(n, sig)
    responses = {
        n: clients[n].unmask(alive, server.signatures, trust[n], round_=round_,
                             session=params.session)
        for n in server.signatures
    }  # fmt: skip
    return server.unmask(responses), server
