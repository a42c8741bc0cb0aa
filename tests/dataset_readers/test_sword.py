"""The SWORD decoder on tiny modules written by the test: block index, verse slots, linked
commentary entries, entry widths, markup stripping, sections."""

from __future__ import annotations

import pytest

from extok_rag.datasets.sword import SwordError, SwordModule, find_modules, module_sections

HEADER = ["", '<milestone type="x-importer" subType="x-osis2mod" n="$Rev: 1 $"/>']
GEN_INTRO = (
    '<div canonical="true" osisID="Gen" sID="b1" type="book"/> <title type="main">The First '
    'Book</title> <div sID="p0" type="x-p"/>An introduction that is plain prose. '
)
GEN_1 = '<chapter n="1" osisID="Gen.1" sID="Gen.1"/> '
VERSES = [
    '<div sID="p1" type="x-p"/>In the <w lemma="strong:H7225">beginning</w> <w>God</w>'
    '<note placement="foot"><reference type="annotateRef">1:1 </reference>A note.</note>'
    "<w>created</w> the heavens &amp; the earth.",
    '<transChange type="added">And</transChange> the earth was <q>formless</q> .',
    '<div type="x-milestone" subType="x-preverse" sID="pv1"/><div sID="p2" type="x-p"/>'
    '<div type="x-milestone" subType="x-preverse" eID="pv1"/>¶ God said, '
    '<title type="x-s">A heading</title>“Let there be light.”',
    '<lg sID="s1"/><l sID="l1"/>A line of verse<l eID="l1"/><l sID="l2"/>and another.<l eID="l2"/>',
]
PS_1 = '<chapter n="1" osisID="Ps.1" sID="Ps.1"/> '


def text_module(tmp_path, sword_module, **kwargs):
    slots = [*HEADER, GEN_INTRO, GEN_1, *VERSES]
    conf = sword_module(tmp_path, "TinyText", {"ot": slots}, **kwargs)
    return SwordModule.from_conf(conf)


def test_conf_is_read(tmp_path, sword_module):
    module = text_module(tmp_path, sword_module)
    assert module.name == "TinyText" and module.driver == "ztext"
    assert module.source_type == "OSIS"
    assert module.data_path == tmp_path / "modules/texts/ztext/tinytext"
    assert find_modules(tmp_path) == [module]


def test_osis_markup_becomes_paragraphs_of_chapters(tmp_path, sword_module):
    sections = module_sections(text_module(tmp_path, sword_module))
    assert [s.osis_id for s in sections] == ["Gen", "Gen.1"]
    assert sections[0].paragraphs == ("An introduction that is plain prose.",)
    assert sections[1].book == "Gen"
    assert sections[1].paragraphs == (
        "In the beginning God created the heavens & the earth. And the earth was formless.",
        "God said, “Let there be light.”",
        "A line of verse and another.",
    )


@pytest.mark.parametrize(("driver", "width"), [("zText4", 12), ("zCom4", 10), ("zText", 10)])
def test_entry_width_follows_the_file(tmp_path, sword_module, driver, width):
    """Debian's MHCC says zCom4 but has 10-byte verse entries: the file decides."""
    sections = module_sections(text_module(tmp_path, sword_module, driver=driver, width=width))
    assert [s.osis_id for s in sections] == ["Gen", "Gen.1"]


def test_block_sizes_do_not_matter(tmp_path, sword_module):
    one = module_sections(text_module(tmp_path / "a", sword_module, per_block=1))
    many = module_sections(text_module(tmp_path / "b", sword_module, per_block=50))
    chapters = module_sections(text_module(tmp_path / "c", sword_module, BlockType="CHAPTER"))
    assert one == many == chapters  # BlockType CHAPTER: files ot.czs / ot.czv / ot.czz
    assert (tmp_path / "c/modules/texts/ztext/tinytext/ot.czv").is_file()


def test_missing_data_files_raise(tmp_path, sword_module):
    module = text_module(tmp_path, sword_module)
    for path in module.data_path.iterdir():
        path.rename(path.with_suffix(".old"))
    with pytest.raises(SwordError, match="no ot/nt"):
        module_sections(module)


def test_linked_commentary_entries_are_read_once(tmp_path, sword_module):
    comment = '<div sID="c1" type="x-p"/><hi type="bold">Verses 1-3</hi><div eID="c1" type="x-p"/>'
    comment += '<div sID="c2" type="x-p"/>A comment on three verses at once.'
    slots = [*HEADER, '<div osisID="Gen" sID="b" type="book"/>', GEN_1, comment, 4, 4, "Next."]
    conf = sword_module(tmp_path, "TinyCom", {"ot": slots}, driver="zCom")
    (section,) = module_sections(SwordModule.from_conf(conf))
    assert section.paragraphs == ("Verses 1-3", "A comment on three verses at once. Next.")


def test_new_testament_follows_the_old(tmp_path, sword_module):
    nt = [
        *HEADER,
        '<div osisID="Matt" sID="m" type="book"/>',
        '<chapter osisID="Matt.1" sID="Matt.1"/>',
    ]
    nt.append("The book of the genealogy.")
    slots = {"ot": [*HEADER, GEN_INTRO, GEN_1, VERSES[0]], "nt": nt}
    conf = sword_module(tmp_path, "Both", slots)
    sections = module_sections(SwordModule.from_conf(conf))
    assert [s.osis_id for s in sections] == ["Gen", "Gen.1", "Matt.1"]
    assert sections[-1].paragraphs == ("The book of the genealogy.",)


def test_gbf_markup_and_block_sections(tmp_path, sword_module):
    slots = ["", "", "In the beginning<RF>a note<Rf> God created.<CM>", "A new paragraph."]
    slots += ["<TS>Title<Ts>Second block."]
    conf = sword_module(tmp_path, "Gbf", {"ot": slots}, per_block=4, SourceType="GBF")
    sections = module_sections(SwordModule.from_conf(conf))
    assert [s.paragraphs for s in sections] == [
        ("In the beginning God created.", "A new paragraph."),
        ("Second block.",),
    ]


def test_held_out_is_the_callers_choice_but_books_are_labelled(tmp_path, sword_module):
    slots = [*HEADER, GEN_INTRO, GEN_1, VERSES[0], '<div osisID="Ps" sID="p" type="book"/>', PS_1]
    slots.append("Blessed is the man.")
    conf = sword_module(tmp_path, "WithPsalms", {"ot": slots})
    sections = module_sections(SwordModule.from_conf(conf))
    assert [(s.osis_id, s.book) for s in sections] == [
        ("Gen", "Gen"),
        ("Gen.1", "Gen"),
        ("Ps.1", "Ps"),
    ]


def test_unsupported_modules_raise(tmp_path, sword_module):
    for name, conf in (("Lzss", {"CompressType": "LZSS"}), ("Raw", {"driver": "RawText"})):
        kwargs = {"driver": conf.pop("driver")} if "driver" in conf else {}
        path = sword_module(tmp_path / name, name, {"ot": [*HEADER, GEN_1]}, **kwargs, **conf)
        with pytest.raises(SwordError):
            module_sections(SwordModule.from_conf(path))
    bad = tmp_path / "mods.d" / "bad.conf"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("no section here\n")
    with pytest.raises(SwordError, match="not a SWORD module"):
        SwordModule.from_conf(bad)


def test_a_damaged_index_raises(tmp_path, sword_module):
    module = text_module(tmp_path, sword_module)
    bzv = module.data_path / "ot.bzv"
    bzv.write_bytes(bzv.read_bytes()[:-3])
    with pytest.raises(SwordError, match="does not match"):
        module_sections(module)
