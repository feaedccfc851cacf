"""Disease ontologies for DS consent matching: term IDs, the ``is_a`` hierarchy, OBO files.

A ``DS:<term>`` consent covers a study of that disease or of any disease below it
(:meth:`DiseaseOntology.is_ancestor_or_self`); the hierarchy is read from an OBO file such as
MONDO's ``mondo.obo`` (:func:`load_obo`). Term IDs are compared as :func:`normalise_term`
writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from fedstat.errors import InputError


def normalise_term(term: str) -> str:
    """An ontology term ID as consent matching compares it: stripped, upper-cased, and ``PREFIX_ID``
    (the OBO PURL form) written ``PREFIX:ID``; e.g. ``mondo_0005148`` -> ``MONDO:0005148``."""
    term = term.strip().upper()
    if ":" not in term and "_" in term:
        prefix, _, local = term.partition("_")
        term = f"{prefix}:{local}"
    return term


@dataclass(frozen=True, eq=False)
class DiseaseOntology:
    """A disease hierarchy (``is_a`` edges) answering ancestor questions.

    Attributes
    ----------
    parents : term -> its direct ``is_a`` parents, all as normalised CURIEs

    Notes
    -----
    A term missing from the ontology is an ancestor only of itself. Cycles are tolerated.
    Obsolete terms are kept as written (they usually have no parents), so a consent tagged
    with an obsolete term matches only that exact term.
    """

    parents: Mapping[str, frozenset[str]]
    _ancestors: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.parents)

    def __contains__(self, term: object) -> bool:
        return isinstance(term, str) and normalise_term(term) in self.parents

    def ancestors(self, term: str) -> frozenset[str]:
        """``term`` and every term above it (normalised CURIEs)."""
        term = normalise_term(term)
        cached = self._ancestors.get(term)
        if cached is not None:
            return cached
        seen = {term}
        stack = [term]
        while stack:
            for parent in self.parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        result = frozenset(seen)
        self._ancestors[term] = result
        return result

    def is_ancestor_or_self(self, ancestor: str, term: str) -> bool:
        """Whether ``ancestor`` is ``term`` or lies above it (following ``is_a``)."""
        return normalise_term(ancestor) in self.ancestors(term)


def load_obo(path: str | Path) -> DiseaseOntology:
    """Read the ``is_a`` hierarchy of an OBO file, e.g. ``mondo.obo``.

    Only ``[Term]`` stanzas count; their ``id:`` and ``is_a:`` lines are read (qualifiers in
    braces and ``! label`` comments are ignored). Other stanzas (``[Typedef]``) and every
    other tag are skipped.

    Parameters
    ----------
    path : the OBO 1.4 file

    Returns
    -------
    DiseaseOntology

    Raises
    ------
    InputError
        If the file cannot be read, is not UTF-8, has an ``is_a`` outside a term, or holds no term.

    References
    ----------
    The OBO Flat File Format 1.4, https://owlcollab.github.io/oboformat/doc/obo-syntax.html
    """
    path = Path(path)
    parents: dict[str, set[str]] = {}
    current: set[str] | None = None
    in_term = False
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.strip()
                if line.startswith("["):
                    in_term = line == "[Term]"
                    current = None
                    continue
                if not in_term:
                    continue
                tag, sep, value = line.partition(":")
                if not sep:
                    continue
                tag = tag.strip()
                words = value.split()
                if tag == "id" and words:
                    current = parents.setdefault(normalise_term(words[0]), set())
                elif tag == "is_a" and words:
                    if current is None:
                        raise InputError(f"{path}: line {lineno}: is_a before the term's id")
                    current.add(normalise_term(words[0]))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ontology ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: ontology is not UTF-8 text") from exc
    if not parents:
        raise InputError(f"{path}: no [Term] with an id: this is not an OBO ontology")
    return DiseaseOntology(parents=MappingProxyType({t: frozenset(p) for t, p in parents.items()}))
