"""The cleaner on small inline inputs: prose kept, navigation / code / tables dropped, dedupe."""

from __future__ import annotations

from extok_rag.training import cleaning

PROSE = (
    "The package manager keeps a database of installed packages, and it checks every "
    "dependency before it changes anything on the system."
)
PROSE_2 = (
    "When a download fails, the tool retries it twice and then reports the mirror that "
    "failed, so that the administrator can choose another one."
)

PAGE = f"""<html><head><title>Guide</title><style>p {{ color: red }}</style></head>
<body class="sidebar-visible">
<nav><ul><li><a href="a.html">Previous chapter about the installation of packages and more</a>
</li></ul></nav>
<div class="navheader">Chapter 2. Package management &mdash; Next &raquo; Home &laquo; Prev</div>
<div class="sphinxsidebar"><p>{PROSE_2.replace("tool", "sidebar tool")}</p></div>
<script>var x = "{PROSE}";</script>
<h1>Package management</h1>
<p>{PROSE.replace("database", "<em>database</em>")}</p>
<pre>apt-get install foo &amp;&amp; echo "installed the package foo into the system today"</pre>
<table><tr><td>{PROSE_2.replace("tool", "table tool")}</td></tr></table>
<div class="highlight-python"><div>for package in packages: install(package) # and so on</div></div>
<p>{PROSE_2}</p>
<footer>Copyright 2024, the authors of this guide. All rights reserved by them forever.</footer>
</body></html>"""


def kept(paragraphs: list[str]) -> list[str]:
    return [p for p in paragraphs if cleaning.is_prose(p)]


def test_html_keeps_prose_and_drops_page_furniture():
    paragraphs = cleaning.html_paragraphs(PAGE)
    assert kept(paragraphs) == [PROSE, PROSE_2]
    text = " ".join(paragraphs)
    for dropped in ("Previous chapter", "Next", "sidebar tool", "table tool", "apt-get", "var x"):
        assert dropped not in text
    assert "color: red" not in text and "Copyright" not in text


def test_html_unclosed_and_stray_tags_do_not_lose_text():
    html = f"<div><p>{PROSE}<p>{PROSE_2}</span></div></li>"
    assert kept(cleaning.html_paragraphs(html)) == [PROSE, PROSE_2]


def test_html_pre_text_keeps_help_pages_readable():
    html = f"<body><pre>*intro.txt*\tFor Vim version 9.0\n\n{PROSE}\n\n\t:set nocompatible\n</pre>"
    paragraphs = cleaning.text_paragraphs("\n\n".join(cleaning.html_blocks(html, keep_pre=True)))
    assert kept(paragraphs) == [PROSE]


def test_text_drops_indented_examples_and_rules():
    cut = PROSE.index(" ", 60)
    noise = "    example --flag value\n=====================\n\n"
    text = f"{PROSE[:cut]}\n{PROSE[cut + 1 :]}\n{noise}{PROSE_2}"
    assert kept(cleaning.text_paragraphs(text)) == [PROSE, PROSE_2]


def test_pod_keeps_text_paragraphs_and_expands_codes():
    marked = PROSE.replace("database", "B<database>").replace("dependency", "L<dependency|x>")
    pod = (
        "=head1 NAME\n\nperlfoo - about foo\n\n"
        f"{marked}"
        "\n\n    my $x = 1;  # verbatim code\n\n=begin html\n\n<p>raw html</p>\n\n=end html\n\n"
        f"{PROSE_2.replace('mirror', 'C<< mirror >>')}\n\n=cut\n"
    )
    assert kept(cleaning.pod_paragraphs(pod)) == [PROSE, PROSE_2]


def test_is_prose_rejects_short_code_and_lists_of_symbols():
    assert cleaning.is_prose(PROSE)
    assert not cleaning.is_prose("Too short to be a paragraph.")
    assert not cleaning.is_prose(PROSE.rstrip("."))  # no sentence end: a heading or fragment
    code = "if (x == 1) { y = f(x); } else { y = g[x] + h[x]; } " * 3 + "return y;"
    assert not cleaning.is_prose(code)
    assert not cleaning.is_prose("/usr/share/doc/pkg/README.gz /etc/apt/sources.list.d/x " * 3)


def test_dedupe_ignores_case_and_whitespace_across_sources():
    deduper = cleaning.ParagraphDeduper()
    assert deduper.admit(PROSE)
    assert not deduper.admit("  " + PROSE.upper().replace(" ", "\n  "))
    assert deduper.admit(PROSE_2)
    assert deduper.duplicates == 1


def test_gcide_entry_loses_markup_and_evaluation_quotations():
    entry = (
        'Abash \\A*bash"\\ ([.a]*b[a^]sh"), v. t. [OE. abaissen, abaisshen.]\n'
        "   To destroy the self-possession of; to confuse or confound, as\n"
        "   by exciting suddenly a consciousness of guilt. See {Confound}.\n"
        "   [1913 Webster]\n\n"
        "         Abashed, the devil stood,\n"
        "         And felt how awful goodness is.          --Milton.\n"
        "   [1913 Webster]\n\n"
        '   2. To put to shame. "Thus was he abashed." --Shak. "He was much\n'
        '   abashed." --Chaucer. An encyclop[ae]dia entry.\n'
    )
    paragraph = cleaning.gcide_paragraph(entry)
    assert paragraph.startswith("Abash, v. t. To destroy the self-possession of")
    assert "Confound." in paragraph and "encyclopaedia" in paragraph
    assert '"He was much abashed." --Chaucer.' in paragraph
    for gone in ("devil stood", "Thus was he", "Milton", "Shak", "1913", "OE.", "[", "{"):
        assert gone not in paragraph


def test_dictd_numbers_are_base64_digits():
    assert cleaning._dictd_number("A") == 0
    assert cleaning._dictd_number("BA") == 64
    assert cleaning._dictd_number("Fz") == 5 * 64 + 51
