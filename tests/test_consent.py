"""Consent matching: DUO parsing, the purpose x consent rules, ontology ancestry, the column mask, withdrawals."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstat.consent import (
    REVIEW_MODIFIERS,
    WITHDRAWN,
    ConsentCode,
    ConsentSummary,
    Exclusion,
    Modifier,
    Permission,
    Purpose,
    WithdrawalRegistry,
    clearable,
    consent_mask,
    consent_matches,
    exclusion_reason,
    load_obo,
    parse_consent,
    parse_purpose,
    select_participants,
)
from fedstat.consent import selection as consent  # parse_consent as the column step calls it
from fedstat.errors import InputError

T2D = "MONDO:0005148"  # type 2 diabetes mellitus
T1D = "MONDO:0005147"  # type 1 diabetes mellitus
DM = "MONDO:0005015"  # diabetes mellitus, parent of both
DISEASE = "MONDO:0000001"  # disease, root

MINI_MONDO = f"""format-version: 1.4
ontology: mondo-mini

[Term]
id: {DISEASE}
name: disease

[Term]
id: {DM}
name: diabetes mellitus
is_a: {DISEASE} ! disease

[Term]
id: {T2D}
name: type 2 diabetes mellitus
is_a: {DM} {{source="DOID:9352"}} ! diabetes mellitus

[Term]
id: {T1D}
name: type 1 diabetes mellitus
is_a: {DM} ! diabetes mellitus

[Term]
id: MONDO:0000999
name: obsolete thing
is_obsolete: true

[Typedef]
id: part_of
is_a: BFO:0000050
"""


@pytest.fixture
def mondo(tmp_path):
    path = tmp_path / "mondo-mini.obo"
    path.write_text(MINI_MONDO, encoding="utf-8")
    return load_obo(path)


def code(permission, *diseases, mods=()):
    return ConsentCode(permission=permission, diseases=diseases, modifiers=frozenset(mods))


# ---------------------------------------------------------------------------------------------
# parse_consent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NRES", code(Permission.NRES)),
        ("GRU", code(Permission.GRU)),
        ("HMB", code(Permission.HMB)),
        ("POA", code(Permission.POA)),
        (f"DS:{T2D}", code(Permission.DS, T2D)),
        (f"DS-{T2D}", code(Permission.DS, T2D)),
        (f"DS({T2D})", code(Permission.DS, T2D)),
        (f"DS={T2D}", code(Permission.DS, T2D)),
    ],
)
def test_parse_consent__abbreviations(text, expected):
    assert parse_consent(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DUO:0000004", code(Permission.NRES)),
        ("DUO:0000042", code(Permission.GRU)),
        ("DUO:0000006", code(Permission.HMB)),
        ("DUO:0000011", code(Permission.POA)),
        (f"DUO:0000007:{T2D}", code(Permission.DS, T2D)),
        (f"DUO:0000007({T2D})", code(Permission.DS, T2D)),
        ("DUO_0000042", code(Permission.GRU)),
        ("DUO:0000042;DUO:0000045;DUO:0000046", code(Permission.GRU, mods={Modifier.NPU, Modifier.NCU})),
        ("DUO:0000006;DUO:0000015;DUO:0000021", code(Permission.HMB, mods={Modifier.NMDS, Modifier.IRB})),
        ("DUO:0000042,DUO:0000018", code(Permission.GRU, mods={Modifier.NPU, Modifier.NCU})),
        ("DUO:0000005", code(Permission.GRU, mods={Modifier.CC})),
    ],
)
def test_parse_consent__duo_curies(text, expected):
    assert parse_consent(text) == expected


def test_parse_consent__every_modifier_by_shorthand_and_curie():
    for modifier in Modifier:
        expected = code(Permission.GRU, mods={modifier})
        assert parse_consent(f"GRU;{modifier.value}") == expected
        assert parse_consent(f"GRU;{modifier.curie}") == expected


@pytest.mark.parametrize(
    "text",
    [
        "  gru ; npu ",
        "Gru,Npu",
        "GRU NPU",
        "gru;;npu;",
        "\tGRU ,\u00a0NPU\n",
        "duo:0000042; duo_0000045",
    ],
)
def test_parse_consent__case_and_whitespace_insensitive(text):
    assert parse_consent(text) == code(Permission.GRU, mods={Modifier.NPU})


def test_parse_consent__whitespace_inside_disease_code_and_lowercase_term():
    assert parse_consent(" ds : mondo:0005148 , irb ") == code(Permission.DS, T2D, mods={Modifier.IRB})
    assert parse_consent("DS( mondo_0005148 )") == code(Permission.DS, T2D)


def test_parse_consent__several_disease_tokens_list_several_diseases():
    assert parse_consent(f"DS:{T1D}; DS:{T2D}; DS:{T1D}") == code(Permission.DS, T1D, T2D)


def test_parse_consent__npuncu_reads_as_npu_and_ncu():
    assert parse_consent("HMB;NPUNCU").modifiers == {Modifier.NPU, Modifier.NCU}


def test_parse_consent__parameterised_modifiers_drop_their_parameter():
    parsed = parse_consent("HMB; RS-PD; GS:EU; MOR-2026-01-01; TS(12)")
    assert parsed == code(Permission.HMB, mods={Modifier.RS, Modifier.GS, Modifier.MOR, Modifier.TS})


@pytest.mark.parametrize(
    "text", ["WITHDRAWN", "withdrawn", " Withdrawn ", "GRU;WITHDRAWN", "withdrawn, DS:MONDO:0005148"]
)
def test_parse_consent__withdrawn_wins(text):
    parsed = parse_consent(text)
    assert parsed == WITHDRAWN
    assert parsed.withdrawn and parsed.permission is None


def test_parse_consent__empty_cell_takes_default():
    default = code(Permission.HMB, mods={Modifier.NPU})
    assert parse_consent("", default=default) is default
    assert parse_consent("  \t ", default=default) is default
    assert parse_consent(" ; , ", default=default) is default


def test_parse_consent__empty_cell_without_default_raises():
    with pytest.raises(InputError, match="empty consent and no dataset default"):
        parse_consent("")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("BOGUS", "unknown consent code 'BOGUS'"),
        ("GRU;XYZ", "unknown consent code 'XYZ'"),
        ("DUO:0000999", "unknown consent code 'DUO:0000999'"),
        ("DUO:12", "unknown consent code 'DUO:12'"),
        ("GRU;HMB", r"more than one data use permission \(GRU, HMB\)"),
        (f"HMB;DS:{T2D}", r"more than one data use permission \(DS, HMB\)"),
        ("NPU;IRB", "has no data use permission"),
        ("DS", "'DS' needs a disease term"),
        ("DS()", "needs a disease term"),
        ("DUO:0000007", "needs a disease term"),
        ("DS:diabetes", "disease term must be a CURIE"),
        ("NRES;NPU", "NRES .* cannot carry modifiers"),
        ("GRU:1", "GRU takes no argument"),
        ("NPU-1;GRU", "NPU takes no argument"),
        ("GRU;RS-P D!", "'D!'"),
        ("GRU;WITHDRAWN;XYZ", "unknown consent code 'XYZ'"),
    ],
)
def test_parse_consent__errors_name_the_code(text, message):
    with pytest.raises(InputError, match=message):
        parse_consent(text)


def test_parse_consent__long_garbage_is_cut_in_the_message():
    with pytest.raises(InputError) as info:
        parse_consent("GRU;" + "X" * 500)
    assert "X" * 40 in str(info.value)
    assert "X" * 41 not in str(info.value)


@pytest.mark.parametrize("text", ["NRES", "GRU;NPU;IRB", f"DS:{T1D};DS:{T2D};NMDS", "POA;NPOA", "WITHDRAWN"])
def test_consent_code__str_reads_back(text):
    parsed = parse_consent(text)
    assert parse_consent(str(parsed)) == parsed


def test_consent_code__invariants_are_enforced():
    with pytest.raises(ValueError):
        ConsentCode(permission=Permission.DS)
    with pytest.raises(ValueError):
        ConsentCode(permission=Permission.GRU, diseases=(T2D,))
    with pytest.raises(ValueError):
        ConsentCode(permission=None)
    with pytest.raises(ValueError):
        ConsentCode(permission=Permission.NRES, modifiers=frozenset({Modifier.NPU}))


# ---------------------------------------------------------------------------------------------
# parse_purpose


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GRU", Purpose(Permission.GRU)),
        ("hmb", Purpose(Permission.HMB)),
        ("POA", Purpose(Permission.POA)),
        (f"DS:{T2D}", Purpose(Permission.DS, disease=T2D)),
        ("ds : mondo_0005148", Purpose(Permission.DS, disease=T2D)),
        (f"DUO:0000007({T2D})", Purpose(Permission.DS, disease=T2D)),
        ("DUO:0000006", Purpose(Permission.HMB)),
        ("HMB,MDS", Purpose(Permission.HMB, methods=True)),
        ("HMB; methods", Purpose(Permission.HMB, methods=True)),
        ("GRU,commercial", Purpose(Permission.GRU, commercial=True)),
        (f" DS:{T2D} , MDS , COMMERCIAL ", Purpose(Permission.DS, disease=T2D, methods=True, commercial=True)),
        ("HMB,HMB", Purpose(Permission.HMB)),
    ],
)
def test_parse_purpose__grammar(text, expected):
    parsed = parse_purpose(text)
    assert parsed == expected
    assert parse_purpose(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no purpose given"),
        ("  ", "no purpose given"),
        ("MDS", "names no research area"),
        ("COMMERCIAL", "names no research area"),
        ("NRES", "describes a consent"),
        ("GRU,NPU", "'NPU' is a consent code"),
        ("HMB,NPUNCU", "'NPUNCU' is a consent code"),
        ("WITHDRAWN", "is a consent code"),
        ("GRU,HMB", r"more than one research area \(GRU, HMB\)"),
        (f"DS:{T1D},DS:{T2D}", "more than one research area"),
        ("DS", "needs a disease term"),
        ("DS:T2D", "disease term must be a CURIE"),
        ("HMB:1", "HMB takes no argument"),
        ("genomics", "unknown purpose 'genomics'"),
    ],
)
def test_parse_purpose__errors(text, message):
    with pytest.raises(InputError, match=message):
        parse_purpose(text)


def test_purpose__invariants_are_enforced():
    with pytest.raises(ValueError):
        Purpose(Permission.NRES)
    with pytest.raises(ValueError):
        Purpose(Permission.DS)
    with pytest.raises(ValueError):
        Purpose(Permission.HMB, disease=T2D)


# ---------------------------------------------------------------------------------------------
# exclusion_reason: the purpose x consent matrix, worked by hand (no ontology: exact disease terms)

OK = None
PERM = Exclusion.PERMISSION
DIS = Exclusion.DISEASE
WD = Exclusion.WITHDRAWN
CONSENTS = ("NRES", "GRU", "HMB", f"DS:{T2D}", f"DS:{T1D}", "POA", "WITHDRAWN")
MATRIX = {
    #                     NRES GRU  HMB   DS:T2D DS:T1D POA   WITHDRAWN
    "GRU": (OK, OK, PERM, PERM, PERM, PERM, WD),
    "HMB": (OK, OK, OK, PERM, PERM, PERM, WD),
    f"DS:{T2D}": (OK, OK, OK, OK, DIS, PERM, WD),
    "POA": (OK, OK, PERM, PERM, PERM, OK, WD),
}


@pytest.mark.parametrize(
    ("purpose", "consent_text", "expected"),
    [(p, c, row[j]) for p, row in MATRIX.items() for j, c in enumerate(CONSENTS)],
)
def test_exclusion_reason__permission_matrix(purpose, consent_text, expected):
    parsed_purpose = parse_purpose(purpose)
    parsed = parse_consent(consent_text)
    assert exclusion_reason(parsed, parsed_purpose) is expected
    assert consent_matches(parsed, parsed_purpose) is (expected is None)
    # The flags change nothing when the consent carries no modifier.
    for flags in (",MDS", ",COMMERCIAL", ",MDS,COMMERCIAL"):
        assert exclusion_reason(parsed, parse_purpose(purpose + flags)) is expected


@pytest.mark.parametrize(
    ("purpose", "consent_text", "expected"),
    [
        ("HMB,COMMERCIAL", "GRU;NPU", Exclusion.COMMERCIAL),
        ("HMB,COMMERCIAL", "GRU;NCU", Exclusion.COMMERCIAL),
        ("HMB,COMMERCIAL", "HMB;NPUNCU", Exclusion.COMMERCIAL),
        (f"DS:{T2D},COMMERCIAL", f"DS:{T2D};NCU", Exclusion.COMMERCIAL),
        ("HMB,COMMERCIAL", "GRU;NMDS", None),
        ("HMB", "GRU;NPU;NCU", None),
        ("HMB,MDS", "GRU;NMDS", Exclusion.METHODS),
        ("HMB,MDS", "HMB;NMDS", Exclusion.METHODS),
        (f"DS:{T2D},MDS", "GRU;NMDS", Exclusion.METHODS),
        (f"DS:{T2D},MDS", f"DS:{T2D};NMDS", None),
        (f"DS:{T2D},MDS", f"DS:{T1D};NMDS", Exclusion.DISEASE),
        ("HMB", "HMB;NMDS", None),
        ("HMB,MDS", "GRU;NPU", None),
        ("POA", "GRU;NPOA", Exclusion.ANCESTRY),
        ("POA,MDS", "POA;NMDS", Exclusion.METHODS),
        ("HMB", "GRU;NPOA", None),
        ("HMB", "GRU;CC", None),
        ("GRU,COMMERCIAL", "GRU;NPU;IRB", Exclusion.COMMERCIAL),
        ("HMB,MDS,COMMERCIAL", "GRU;NMDS;NCU", Exclusion.COMMERCIAL),
        ("POA", "HMB;NPOA", Exclusion.PERMISSION),
        ("HMB,COMMERCIAL", "NRES", None),
    ],
)
def test_exclusion_reason__modifiers(purpose, consent_text, expected):
    assert exclusion_reason(parse_consent(consent_text), parse_purpose(purpose)) is expected


@pytest.mark.parametrize("modifier", sorted(REVIEW_MODIFIERS, key=lambda m: m.value))
def test_exclusion_reason__review_modifier_excludes_until_cleared(modifier):
    parsed = parse_consent(f"GRU;{modifier.value}")
    purpose = parse_purpose("HMB")
    assert exclusion_reason(parsed, purpose) is Exclusion.REVIEW
    assert exclusion_reason(parsed, purpose, cleared=frozenset({modifier})) is None


def test_exclusion_reason__every_review_modifier_must_be_cleared():
    parsed = parse_consent("HMB;IRB;COL")
    purpose = parse_purpose("HMB")
    assert exclusion_reason(parsed, purpose, cleared=clearable(["IRB"])) is Exclusion.REVIEW
    assert exclusion_reason(parsed, purpose, cleared=clearable(["IRB", "col"])) is None


def test_review_modifiers__are_the_human_process_ones():
    automatic = {Modifier.NPU, Modifier.NCU, Modifier.NMDS, Modifier.NPOA, Modifier.CC}
    assert REVIEW_MODIFIERS == set(Modifier) - automatic


def test_clearable__accepts_names_curies_and_members():
    assert clearable([" irb", "DUO:0000020", Modifier.GSO]) == {Modifier.IRB, Modifier.COL, Modifier.GSO}
    assert clearable([]) == frozenset()


@pytest.mark.parametrize(
    ("value", "message"), [("NPU", "decided automatically"), ("CC", "decided"), ("XYZ", "not a DUO")]
)
def test_clearable__refuses_automatic_and_unknown(value, message):
    with pytest.raises(InputError, match=message):
        clearable([value])


# ---------------------------------------------------------------------------------------------
# DiseaseOntology / load_obo


def test_load_obo__reads_terms_and_is_a_only(mondo):
    assert len(mondo) == 5  # the [Typedef] is skipped
    assert mondo.parents[T2D] == {DM}  # the {source=...} qualifier and ! label are ignored
    assert mondo.parents[DISEASE] == frozenset()
    assert "part_of" not in mondo
    assert "BFO:0000050" not in mondo
    assert T2D in mondo and "mondo:0005148" in mondo


def test_is_ancestor_or_self__follows_is_a_upwards_only(mondo):
    assert mondo.is_ancestor_or_self(T2D, T2D)
    assert mondo.is_ancestor_or_self(DM, T2D)
    assert mondo.is_ancestor_or_self(DISEASE, T2D)
    assert mondo.is_ancestor_or_self("mondo_0005015", "MONDO:0005148")
    assert not mondo.is_ancestor_or_self(T2D, DM)  # a child is no ancestor
    assert not mondo.is_ancestor_or_self(T1D, T2D)  # nor is a sibling
    assert mondo.ancestors(T2D) == {T2D, DM, DISEASE}


def test_is_ancestor_or_self__unknown_term_is_only_its_own_ancestor(mondo):
    assert mondo.is_ancestor_or_self("DOID:9352", "DOID:9352")
    assert not mondo.is_ancestor_or_self(DISEASE, "DOID:9352")
    assert not mondo.is_ancestor_or_self("DOID:9352", T2D)


def test_load_obo__tolerates_cycles(tmp_path):
    path = tmp_path / "cycle.obo"
    path.write_text("[Term]\nid: X:1\nis_a: X:2\n\n[Term]\nid: X:2\nis_a: X:1\n", encoding="utf-8")
    ontology = load_obo(path)
    assert ontology.ancestors("X:1") == {"X:1", "X:2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("format-version: 1.4\n\n[Typedef]\nid: part_of\n", "no \\[Term\\]"),
        ("", "no \\[Term\\]"),
        ("[Term]\nis_a: X:2\nid: X:1\n", "line 2: is_a before the term's id"),
    ],
)
def test_load_obo__errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.obo"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        load_obo(path)
    assert "bad.obo" in str(info.value)


def test_load_obo__missing_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read ontology"):
        load_obo(tmp_path / "absent.obo")


def test_exclusion_reason__ds_consent_covers_descendant_diseases_with_ontology(mondo):
    purpose_t2d = parse_purpose(f"DS:{T2D}")
    consent_dm = parse_consent(f"DS:{DM}")
    # Consent for diabetes mellitus covers a type 2 diabetes study, but only with the ontology.
    assert exclusion_reason(consent_dm, purpose_t2d) is Exclusion.DISEASE
    assert exclusion_reason(consent_dm, purpose_t2d, ontology=mondo) is None
    assert exclusion_reason(parse_consent(f"DS:{DISEASE}"), purpose_t2d, ontology=mondo) is None
    # The reverse never holds: consent for type 2 diabetes does not cover diabetes in general.
    assert exclusion_reason(parse_consent(f"DS:{T2D}"), parse_purpose(f"DS:{DM}"), ontology=mondo) is Exclusion.DISEASE
    assert exclusion_reason(parse_consent(f"DS:{T1D}"), purpose_t2d, ontology=mondo) is Exclusion.DISEASE
    # With several consented diseases one covering disease suffices.
    assert exclusion_reason(parse_consent(f"DS:{T1D};DS:{T2D}"), purpose_t2d) is None


def test_exclusion_reason__nmds_allows_methods_within_an_ancestor_disease(mondo):
    parsed = parse_consent(f"DS:{DM};NMDS")
    purpose = parse_purpose(f"DS:{T2D},MDS")
    assert exclusion_reason(parsed, purpose, ontology=mondo) is None
    assert exclusion_reason(parsed, purpose) is Exclusion.DISEASE


# ---------------------------------------------------------------------------------------------
# consent_mask

MIXED = [
    "GRU",  # 0 included
    "",  # 1 default HMB: included
    "HMB;NPU",  # 2 commercial
    "WITHDRAWN",  # 3 withdrawn
    f"DS:{T2D}",  # 4 included
    "gru ",  # 5 included
    "POA",  # 6 permission
    "GRU;IRB",  # 7 review
    "GRU;IRB",  # 8 review
    f"DS:{T1D}",  # 9 disease
    "HMB",  # 10 included
]
MIXED_PURPOSE = f"DS:{T2D},COMMERCIAL"


def test_consent_mask__mask_and_reason_counts_on_a_mixed_column():
    selection = consent_mask(MIXED, purpose=parse_purpose(MIXED_PURPOSE), default="HMB")
    assert selection.mask.tolist() == [True, True, False, False, True, True, False, False, False, False, True]
    assert selection.withdrawn.tolist() == [i == 3 for i in range(11)]
    assert selection.summary == ConsentSummary(
        n_total=11,
        n_included=5,
        withdrawn=1,
        commercial=1,
        permission=1,
        review=2,
        disease=1,
        n_defaulted=1,
    )
    assert selection.summary.n_excluded == 6
    assert sum(selection.summary.excluded_by().values()) == 6
    assert selection.summary.as_dict()["review"] == 2
    assert not selection.mask.flags.writeable


def test_consent_mask__cleared_modifiers_are_included_and_counted():
    selection = consent_mask(MIXED, purpose=parse_purpose(MIXED_PURPOSE), default="HMB", cleared=["IRB"])
    assert selection.mask[[7, 8]].all()
    assert selection.summary.n_included == 7
    assert selection.summary.review == 0
    assert selection.summary.n_cleared == 2


def test_consent_mask__registry_mask_excludes_whatever_the_cell_says():
    withdrawn = np.zeros(len(MIXED), dtype=bool)
    withdrawn[[0, 3]] = True  # row 3's cell says WITHDRAWN too: counted there, not twice
    selection = consent_mask(MIXED, purpose=parse_purpose(MIXED_PURPOSE), default="HMB", withdrawn=withdrawn)
    assert not selection.mask[0]
    assert selection.summary.withdrawn_earlier == 1
    assert selection.summary.withdrawn == 1
    assert selection.summary.n_included == 4


def test_consent_mask__default_may_be_a_code_and_none_or_missing_cells_take_it():
    default = parse_consent("GRU;NPU")
    selection = consent_mask(["", None, "HMB"], purpose=parse_purpose("HMB,COMMERCIAL"), default=default)
    assert selection.mask.tolist() == [False, False, True]
    assert selection.summary.commercial == 2
    assert selection.summary.n_defaulted == 2


def test_consent_mask__withdrawn_default_marks_empty_cells_withdrawn():
    selection = consent_mask(["", "GRU"], purpose=parse_purpose("GRU"), default="WITHDRAWN")
    assert selection.withdrawn.tolist() == [True, False]
    assert selection.mask.tolist() == [False, True]


def test_consent_mask__parses_each_distinct_cell_once(monkeypatch):
    calls = []
    real = consent.parse_consent

    def counting(text, **kwargs):
        calls.append(text)
        return real(text, **kwargs)

    monkeypatch.setattr(consent, "parse_consent", counting)
    cells = ["GRU", "HMB;NPU", "", f"DS:{T2D}"] * 25_000
    selection = consent_mask(cells, purpose=parse_purpose("HMB,COMMERCIAL"), default="GRU")
    assert sorted(calls) == sorted(["GRU", "HMB;NPU", "", f"DS:{T2D}", "GRU"])  # + the default once
    assert selection.summary.n_total == 100_000
    assert selection.summary.n_included == 50_000
    assert selection.summary.commercial == 25_000
    assert selection.summary.permission == 25_000
    assert selection.mask.shape == (100_000,)
    assert selection.mask.dtype == bool


def test_consent_mask__empty_column():
    selection = consent_mask([], purpose=parse_purpose("GRU"))
    assert selection.mask.shape == (0,)
    assert selection.summary == ConsentSummary(n_total=0, n_included=0)


def test_consent_mask__error_names_first_bad_line_and_code():
    with pytest.raises(InputError) as info:
        consent_mask(
            ["GRU", "GRU", "BOGUS", "HMB;XYZ", "BOGUS"],
            purpose=parse_purpose("GRU"),
            lines=[2, 3, 5, 6, 7],
            source="site/samples.tsv",
        )
    assert str(info.value).startswith("site/samples.tsv: line 5: unknown consent code 'BOGUS'")


def test_consent_mask__error_without_lines_names_the_row():
    with pytest.raises(InputError, match="^row 2 of the consent column: empty consent and no dataset default"):
        consent_mask(["GRU", ""], purpose=parse_purpose("GRU"))


def test_consent_mask__bad_default_and_bad_mask_shape_raise():
    with pytest.raises(InputError, match="dataset default consent: .*'NOPE'"):
        consent_mask(["GRU"], purpose=parse_purpose("GRU"), default="NOPE")
    with pytest.raises(InputError, match=r"withdrawal mask has shape \(3,\), expected \(2,\)"):
        consent_mask(["GRU", "GRU"], purpose=parse_purpose("GRU"), withdrawn=np.zeros(3, dtype=bool))
    with pytest.raises(InputError, match="cannot clear NPU"):
        consent_mask(["GRU"], purpose=parse_purpose("GRU"), cleared=["NPU"])


# ---------------------------------------------------------------------------------------------
# WithdrawalRegistry / select_participants


def test_withdrawal_registry__record_and_query(tmp_path):
    registry = WithdrawalRegistry(tmp_path / "withdrawn.db")
    assert len(registry) == 0
    assert registry.record(["s2", "s4"]) == 2
    assert registry.record(["s4", "s5"]) == 1  # s4 already there
    assert registry.record([]) == 0
    assert registry.is_withdrawn(["s1", "s2", "s3", "s4", "s5", "S2"]).tolist() == [
        False,
        True,
        False,
        True,
        True,
        False,  # IDs are case-sensitive
    ]
    assert registry.is_withdrawn([]).shape == (0,)
    assert len(registry) == 3


def test_withdrawal_registry__survives_restart(tmp_path):
    path = tmp_path / "withdrawn.db"
    WithdrawalRegistry(path).record(["s2"])
    reopened = WithdrawalRegistry(path)
    assert reopened.is_withdrawn(["s1", "s2"]).tolist() == [False, True]


def test_withdrawal_registry__stores_no_raw_ids_and_owner_only_files(tmp_path):
    path = tmp_path / "withdrawn.db"
    secret = "participant-ABC-123456"
    WithdrawalRegistry(path).record([secret])
    for file in tmp_path.iterdir():
        assert secret.encode() not in file.read_bytes()
        if os.name == "posix":
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name
    assert (tmp_path / "withdrawn.db.key").stat().st_size == 32


def test_withdrawal_registry__different_registries_hash_differently(tmp_path):
    a = WithdrawalRegistry(tmp_path / "a.db")
    b = WithdrawalRegistry(tmp_path / "b.db")
    assert a._hashes(["s1"]) != b._hashes(["s1"])


def test_withdrawal_registry__missing_key_is_an_error_not_amnesia(tmp_path):
    path = tmp_path / "withdrawn.db"
    WithdrawalRegistry(path).record(["s2"])
    (tmp_path / "withdrawn.db.key").unlink()
    with pytest.raises(InputError, match="key of withdrawal registry .* is missing"):
        WithdrawalRegistry(path)


def test_withdrawal_registry__substituted_or_malformed_key_is_an_error(tmp_path):
    path = tmp_path / "withdrawn.db"
    WithdrawalRegistry(path)
    key_path = tmp_path / "withdrawn.db.key"
    key_path.write_bytes(bytes(32))
    with pytest.raises(InputError, match="key does not belong"):
        WithdrawalRegistry(path)
    key_path.write_bytes(b"short")
    with pytest.raises(InputError, match="must be 32 bytes"):
        WithdrawalRegistry(path)


def test_withdrawal_registry__not_a_database_is_an_input_error(tmp_path):
    path = tmp_path / "withdrawn.db"
    path.write_text("this is not sqlite\n" * 100)
    with pytest.raises(InputError, match="not a readable withdrawal registry"):
        WithdrawalRegistry(path)


def test_select_participants__withdrawal_is_sticky_across_tables_and_restarts(tmp_path):
    path = tmp_path / "withdrawn.db"
    purpose = parse_purpose("HMB")
    ids = ["s1", "s2", "s3"]
    first = select_participants(ids, ["GRU", "WITHDRAWN", "HMB"], purpose=purpose, registry=WithdrawalRegistry(path))
    assert first.mask.tolist() == [True, False, True]
    assert first.summary.withdrawn == 1
    assert first.summary.withdrawn_earlier == 0

    # A later table says s2 consents again, and its row moved; the site has restarted.
    later_ids = ["s3", "s1", "s2", "s9"]
    later = select_participants(
        later_ids, ["HMB", "GRU", "GRU", ""], purpose=purpose, registry=WithdrawalRegistry(path), default="GRU"
    )
    assert later.mask.tolist() == [True, True, False, True]
    assert later.summary.withdrawn == 0
    assert later.summary.withdrawn_earlier == 1
    assert later.summary.n_included == 3


def test_select_participants__records_withdrawals_even_when_another_cell_is_bad(tmp_path):
    registry = WithdrawalRegistry(tmp_path / "withdrawn.db")
    with pytest.raises(InputError) as info:
        select_participants(
            ["secret-id-1", "secret-id-2", "secret-id-3"],
            ["withdrawn", "BOGUS", "GRU;WITHDRAWN;TYPO"],
            purpose=parse_purpose("GRU"),
            registry=registry,
            lines=[2, 3, 4],
        )
    assert "line 3" in str(info.value)
    assert "secret-id" not in str(info.value)
    assert registry.is_withdrawn(["secret-id-1", "secret-id-2", "secret-id-3"]).tolist() == [True, False, True]


def test_select_participants__length_mismatch_raises(tmp_path):
    with pytest.raises(InputError, match="2 participant IDs but 1 consent cells"):
        select_participants(
            ["s1", "s2"], ["GRU"], purpose=parse_purpose("GRU"), registry=WithdrawalRegistry(tmp_path / "w.db")
        )


# ---------------------------------------------------------------------------------------------
# Properties: arbitrary text never raises anything but InputError, and what parses reads back.

CODE_ALPHABET = "GRUHMBDSPOANCIMLWTEXQ:;,-()=_ \t0123456789"
TEXTS = st.one_of(st.text(max_size=60), st.text(alphabet=CODE_ALPHABET, max_size=40))


@settings(max_examples=400, deadline=None, database=None)
@given(TEXTS)
def test_parse_consent__arbitrary_text_raises_only_input_error(text):
    try:
        parsed = parse_consent(text, default=WITHDRAWN)
    except InputError:
        return
    assert isinstance(parsed, ConsentCode)
    assert parse_consent(str(parsed)) == parsed


@settings(max_examples=400, deadline=None, database=None)
@given(TEXTS)
def test_parse_purpose__arbitrary_text_raises_only_input_error(text):
    try:
        parsed = parse_purpose(text)
    except InputError:
        return
    assert isinstance(parsed, Purpose)
    assert parse_purpose(str(parsed)) == parsed
