"""SecAgg+ stages as pure functions: a client's session and the server's round.

Per round (Bell et al., CCS 2020, semi-honest server with the lying-server rule):

1. keys: each client makes two X25519 key pairs and a self-mask seed ``b``.
2. shares: it Shamir-shares ``b`` and its masking key ``s`` among its neighbours
   (threshold ``t``), each share encrypted to that neighbour; the server relays.
3. masked input: ``y_i = x_i + PRG(b_i) + sum_j +-PRG(s_ij) mod R`` over the
   neighbours that shared (pairwise masks cancel in the sum).
4. unmask: every survivor returns, per neighbour, the share of ``b`` (neighbour
   survived) or of ``s`` (neighbour dropped after sharing), never both, and
   answers once: a server that lies about dropouts cannot get both secrets of a
   client. The server rebuilds the secrets from ``t`` shares, removes the self
   masks of survivors and the dropped clients' pairwise masks.

A client that drops before sharing is left out (nobody masked with it); one that
drops after sharing but before its masked input is unmasked from its neighbours'
``s`` shares; fewer than ``t`` shares of any secret leave the round unaggregated.
Everything a client holds between stages is in ``ClientSession`` (kept in its
Flower ``context.state``); everything here checks its inputs and raises
``SecAggError`` naming the node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.fernet import InvalidToken
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)

from flwr_privacy.secagg.crypto import (
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
from flwr_privacy.secagg.encoding import pack, unpack

STAGES = ("keys", "shares", "masked", "unmasked")
SHARE_LABEL, MASK_LABEL, SELF_LABEL = b"share", b"mask", b"self"
PublicKeys = tuple[bytes, bytes]  # (c: share encryption, s: masking)


def ids_to_bytes(ids: Iterable[int]) -> bytes:
    """Node ids (unsigned 64-bit) as bytes: Flower records hold only signed 64-bit ints."""
    return b"".join(int(i).to_bytes(8, "little", signed=False) for i in ids)


def bytes_to_ids(data: bytes) -> list[int]:
    if len(data) % 8:
        raise SecAggError("a node-id list must be a multiple of 8 bytes")
    return [int.from_bytes(data[p : p + 8], "little", signed=False) for p in range(0, len(data), 8)]


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


@dataclass
class ClientSession:
    """One client's SecAgg+ state for one round (secrets never leave it unshared)."""

    node: int
    round: int
    session: bytes
    threshold: int
    neighbours: list[int]
    mod_bits: int
    size: int
    c: KeyPair
    s: KeyPair
    seed: bytes
    stage: str = "keys"
    public: dict[int, PublicKeys] = field(default_factory=dict)
    ciphertexts: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        *,
        node: int,
        round_: int,
        session: bytes,
        threshold: int,
        neighbours: Iterable[int],
        mod_bits: int,
        size: int,
    ) -> ClientSession:
        """Stage 1: fresh keys and seed for this round."""
        neighbours = sorted(set(neighbours) - {node})
        if not 1 <= threshold <= len(neighbours):
            raise SecAggError(
                f"node {node}: threshold {threshold} needs 1 <= t <= its "
                f"{len(neighbours)} neighbours"
            )
        if not 1 <= mod_bits <= 32 or size < 1:
            raise SecAggError(f"node {node}: mod_bits {mod_bits} must be in [1, 32], size >= 1")
        return cls(
            node=node,
            round=round_,
            session=session,
            threshold=threshold,
            neighbours=neighbours,
            mod_bits=mod_bits,
            size=size,
            c=KeyPair.generate(),
            s=KeyPair.generate(),
            seed=new_seed(),
        )

    @property
    def public_keys(self) -> PublicKeys:
        return self.c.public, self.s.public

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

    def share_keys(
        self, public: Mapping[int, PublicKeys], *, round_: int, session: bytes
    ) -> dict[int, bytes]:
        """Stage 2: encrypted shares of ``b`` and ``s`` for each neighbour that advertised keys."""
        self._expect("keys", round_, session)
        unknown = set(public) - set(self.neighbours)
        if unknown:
            raise SecAggError(f"node {self.node}: keys of non-neighbours {sorted(unknown)}")
        present = sorted(public)
        if len(present) < self.threshold:
            raise SecAggError(
                f"node {self.node}: only {len(present)} neighbours advertised keys, fewer than "
                f"the threshold {self.threshold}"
            )
        checked = {
            j: (check_public_key(pc, j), check_public_key(ps, j)) for j, (pc, ps) in public.items()
        }
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
        except (InvalidToken, TypeError, ValueError):
            raise SecAggError(
                f"node {self.node}: the shares from node {src} do not decrypt under this round's "
                "key (forged, corrupted, or of another round)"
            ) from None
        got_src, got_dst, b_share, s_share = share_keys_plaintext_separate(plain)
        if (got_src, got_dst) != (src, self.node):
            raise SecAggError(
                f"node {self.node}: shares from node {src} are addressed {got_src} -> {got_dst}"
            )
        return b_share, s_share

    def mask_input(
        self, values: np.ndarray, ciphertexts: Mapping[int, bytes], *, round_: int, session: bytes
    ) -> bytes:
        """Stage 3: the packed masked vector; masks with every neighbour whose shares arrived."""
        self._expect("shares", round_, session)
        if len(ciphertexts) < self.threshold:
            raise SecAggError(
                f"node {self.node}: shares from {len(ciphertexts)} neighbours, fewer than the "
                f"threshold {self.threshold}"
            )
        for src, ct in ciphertexts.items():
            self._open(src, ct)  # refuse the round before masking if any is forged
        values = np.asarray(values)
        if values.shape != (self.size,) or values.dtype != np.uint32:
            raise SecAggError(f"node {self.node}: input must be {self.size} uint32 values")
        if self.mod_bits < 32 and int(values.max(initial=0)) >= (1 << self.mod_bits):
            raise SecAggError(f"node {self.node}: input values exceed 2^{self.mod_bits}")
        y = values + self_mask(self.seed, self.session, self.round, self.node, self.size)
        for j in sorted(ciphertexts):
            stream = _pair_stream(
                self.s.private, self.public[j][1], self.session, self.round, self.node, j, self.size
            )
            _apply_pair(y, stream, self.node, j)
        self.ciphertexts = dict(ciphertexts)
        self.stage = "masked"
        return pack(y & np.uint32((1 << self.mod_bits) - 1), self.mod_bits)

    def unmask(
        self, survivors: Iterable[int], dropped: Iterable[int], *, round_: int, session: bytes
    ) -> dict[int, bytes]:
        """Stage 4: per neighbour, the share of ``b`` (survived) or ``s`` (dropped); once a round.

        Refused when a node is named in both lists or the request repeats: honest
        clients never reveal both secrets of one neighbour (Bell et al.'s rule).
        """
        self._expect("masked", round_, session)
        alive, gone = set(survivors) - {self.node}, set(dropped)
        if self.node in gone:
            raise SecAggError(f"node {self.node}: the server calls this node dropped")
        both = alive & gone
        if both:
            raise SecAggError(
                f"node {self.node}: the server asks for both secrets of nodes {sorted(both)} "
                "(survived and dropped at once): refused"
            )
        unknown = (alive | gone) - set(self.ciphertexts)
        if unknown:
            raise SecAggError(
                f"node {self.node}: unmasking asked for nodes {sorted(unknown)} "
                "whose shares this node never received"
            )
        if len(alive) + 1 < self.threshold:
            raise SecAggError(
                f"node {self.node}: only {len(alive) + 1} survivors, fewer than the threshold "
                f"{self.threshold}: refusing to unmask"
            )
        self.stage = "unmasked"  # before answering: a second request is always refused
        out = {}
        for j in sorted(alive | gone):
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
            "threshold": self.threshold,
            "neighbours": ids_to_bytes(self.neighbours),
            "mod-bits": self.mod_bits,
            "size": self.size,
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
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> ClientSession:
        pub = bytes_to_ids(r["public-ids"])
        cts = bytes_to_ids(r["ct-ids"])
        return cls(
            node=bytes_to_ids(r["node"])[0],
            round=int(r["round"]),
            session=r["session"],
            threshold=int(r["threshold"]),
            neighbours=bytes_to_ids(r["neighbours"]),
            mod_bits=int(r["mod-bits"]),
            size=int(r["size"]),
            c=KeyPair(r["c-sk"], r["c-pk"]),
            s=KeyPair(r["s-sk"], r["s-pk"]),
            seed=r["seed"],
            stage=str(r["stage"]),
            public={j: (c, s) for j, c, s in zip(pub, r["public-c"], r["public-s"], strict=True)},
            ciphertexts=dict(zip(cts, r["cts"], strict=True)),
        )


@dataclass
class ServerRound:
    """What the server holds in one round: graph, public keys, relayed shares, masked inputs.

    It never holds a secret that is not reconstructed from ``t`` shares, and it
    asks every survivor once for one kind of share per neighbour.
    """

    round: int
    session: bytes
    threshold: int
    mod_bits: int
    size: int
    graph: dict[int, set[int]]
    public: dict[int, PublicKeys] = field(default_factory=dict)  # U1
    shares: dict[int, dict[int, bytes]] = field(default_factory=dict)  # U2: src -> dst -> ct
    masked: dict[int, np.ndarray] = field(default_factory=dict)  # U3
    problems: dict[int, str] = field(default_factory=dict)  # node -> why it was left out
    # U2 by recipient (dst -> src -> ct), filled with ``shares``: scanning every sharer for each
    # node made stages 3 and 4 O(n^2) (a million lookups a stage at n = 1000).
    inbox: dict[int, dict[int, bytes]] = field(default_factory=dict, repr=False)

    def refuse(self, node: int, reason: str) -> None:
        self.problems.setdefault(node, reason)

    def add_keys(self, node: int, keys: PublicKeys) -> None:
        if node not in self.graph:
            raise SecAggError(f"node {node} is not in this round's graph")
        self.public[node] = (check_public_key(keys[0], node), check_public_key(keys[1], node))

    def keys_for(self, node: int) -> dict[int, PublicKeys]:
        """The advertised keys of ``node``'s neighbours (stage 2 input)."""
        return {j: self.public[j] for j in sorted(self.graph[node]) if j in self.public}

    def add_shares(self, node: int, ciphertexts: Mapping[int, bytes]) -> None:
        if node not in self.public:
            raise SecAggError(f"node {node} sent shares without having advertised keys")
        expected = set(self.keys_for(node))
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

    def shares_for(self, node: int) -> dict[int, bytes]:
        """Ciphertexts addressed to ``node`` by neighbours that shared (stage 3 input)."""
        return dict(self.inbox.get(node, {}))

    def add_masked(self, node: int, data: bytes) -> None:
        if node not in self.shares:
            raise SecAggError(f"node {node} sent a masked input without having shared its keys")
        if node in self.masked:
            raise SecAggError(f"node {node} sent a second masked input this round")
        self.masked[node] = unpack(data, self.mod_bits, self.size, node)

    def unmask_request(self, node: int) -> tuple[list[int], list[int]]:
        """(neighbours that survived, neighbours that dropped after sharing) for ``node``."""
        sharers = self.inbox.get(node, {})
        return (
            sorted(j for j in sharers if j in self.masked),
            sorted(j for j in sharers if j not in self.masked),
        )

    def _combine(self, target: int, shares: list[bytes], what: str) -> bytes:
        if len(shares) < self.threshold:
            raise SecAggError(
                f"node {target}: {len(shares)} shares of its {what}, fewer than the threshold "
                f"{self.threshold}: the round cannot be unmasked"
            )
        try:
            return combine_shares(shares[: self.threshold])
        except ValueError as e:
            raise SecAggError(f"node {target}: its {what} shares do not combine ({e})") from None

    def unmask(self, responses: Mapping[int, Mapping[int, bytes]]) -> np.ndarray:
        """The sum of the survivors' inputs mod R, from the survivors' share responses."""
        if not self.masked:
            raise SecAggError("no masked input arrived this round")
        by_target: dict[int, list[bytes]] = {}
        for responder, shares in responses.items():
            if responder not in self.masked:
                continue  # only survivors were asked
            for target, share in shares.items():
                by_target.setdefault(target, []).append(share)
        total = np.zeros(self.size, dtype=np.uint32)
        for y in self.masked.values():
            total += y
        for j in sorted(self.masked):  # survivors: remove their self masks
            seed = self._combine(j, by_target.get(j, []), "self-mask seed")
            total -= self_mask(seed, self.session, self.round, j, self.size)
        dropped = sorted(set(self.shares) - set(self.masked))
        for j in dropped:  # dropped after sharing: remove their pairwise masks
            private_s = self._combine(j, by_target.get(j, []), "masking key")
            if public_key_of(private_s) != self.public[j][1]:
                raise SecAggError(
                    f"node {j}: the masking key rebuilt from shares does not match "
                    "its advertised key (a share was corrupted)"
                )
            for i in sorted(i for i in self.shares[j] if i in self.masked):  # masked with j
                stream = _pair_stream(
                    private_s, self.public[i][1], self.session, self.round, i, j, self.size
                )
                _apply_pair(total, stream, i, j, remove=True)
        return total & np.uint32((1 << self.mod_bits) - 1)


def simulate(
    inputs: Mapping[int, np.ndarray],
    *,
    threshold: int,
    degree: int,
    mod_bits: int,
    drop_before_shares: Iterable[int] = (),
    drop_before_masked: Iterable[int] = (),
    round_: int = 1,
) -> tuple[np.ndarray, ServerRound]:
    """Every party of one round in one process (tests and cost benchmarks); returns the sum.

    ``drop_before_shares`` advertise keys and vanish; ``drop_before_masked`` share
    and vanish before sending their masked input.
    """
    from flwr_privacy.secagg.crypto import new_session
    from flwr_privacy.secagg.graph import harary

    nodes = sorted(inputs)
    size = len(next(iter(inputs.values())))
    server = ServerRound(
        round=round_,
        session=new_session(),
        threshold=threshold,
        mod_bits=mod_bits,
        size=size,
        graph=harary(nodes, degree),
    )
    clients = {
        n: ClientSession.start(
            node=n,
            round_=round_,
            session=server.session,
            threshold=threshold,
            neighbours=server.graph[n],
            mod_bits=mod_bits,
            size=size,
        )
        for n in nodes
    }
    for n, c in clients.items():
        server.add_keys(n, c.public_keys)
    early, late = set(drop_before_shares), set(drop_before_masked)
    for n, c in clients.items():
        if n not in early:
            server.add_shares(
                n, c.share_keys(server.keys_for(n), round_=round_, session=server.session)
            )
    for n, c in clients.items():
        if n not in early | late:
            server.add_masked(
                n,
                c.mask_input(
                    inputs[n], server.shares_for(n), round_=round_, session=server.session
                ),
            )
    responses = {
        n: clients[n].unmask(*server.unmask_request(n), round_=round_, session=server.session)
        for n in server.masked
    }
    return server.unmask(responses), server
