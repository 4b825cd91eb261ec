"""A fast wikitext-to-paragraphs stripper, linear in the page size. No Beam, no parser library.

`wikitext_to_paragraphs(wikitext) -> [paragraph, ...]` has the contract of `corpus.wiki.wikitext_to_paragraphs`
(the mwparserfromhell renderer): the plain-text paragraphs of one article, NFC, single spaces, in page order, each
holding at least one letter; sentences are split per paragraph afterwards, so a sentence never spans two.

It works in passes over the page, each one C-speed `re`/`str` work plus Python loops over markup tokens only
(`{{`, `[[`, tags), never over characters, and no pattern can backtrack over more than one line or one token:

1. HTML comments `<!-- -->` are dropped (an unclosed one runs to the end of the page, as MediaWiki renders it).
2. Tags whose contents are not running text are dropped with their contents: `<ref>..</ref>` and `<ref ../>`,
   `<references>`, `<math>`, `<chem>`, `<ce>`, `<gallery>`, `<timeline>`, `<score>`, `<syntaxhighlight>`,
   `<source>`, `<code>`, `<pre>`, `<imagemap>`, `<graph>`, `<mapframe>`, `<hiero>`, `<templatedata>`, `<poem>`
   ... (`_DROPPED_TAGS`). A dropped tag without its closing tag loses only the opening tag.
   `<nowiki>x</nowiki>` keeps `x` as literal text; markup inside it is not interpreted (it is set aside and put
   back at the end), but a paragraph that then shows wiki markup characters (`{{`, `[[`, `{|`) is dropped: for
   pretraining text, an article quoting markup is not prose.
3. Templates and parser functions `{{...}}` (nested to any depth, `{{{parameters}}}` too) are dropped: infoboxes,
   citations, navigation boxes, `{{lang|..}}`, `{{convert|..}}`. A balanced scan over the brace tokens; an
   unclosed `{{` loses only itself, so one typo never swallows the rest of an article.
4. Tables `{| ... |}` (nested; opening and closing at line starts) are dropped with their captions `|+`.
5. Internal links: `[[a|b]]` -> `b`, `[[a]]` -> `a` (a `#section` dropped; a following letter trail such as
   `[[bus]]es` stays attached). Links to files and images (`File:`, `Image:`, `Media:`, with their captions and
   any links nested in them), categories, other namespaces (`Wikipedia:`, `Template:`, `Help:` ...), interwiki
   (`wikt:`) and interlanguage links (`fr:`, `zh-yue:`) are dropped. Captions are dropped because they are not
   part of the running text: they would become sentences out of context between two of the article's sentences.
6. External links: `[http://x label]` -> `label`, `[http://x]` -> nothing (MediaWiki shows a number).
7. Other HTML tags are removed and their text kept (`<b>`, `<i>`, `<span>`, `<small>`, `<sup>`, `<sub>` ...);
   block tags (`<br>`, `<p>`, `<div>`, `<blockquote>`, `<li>` ...) end a paragraph.
8. Bold/italic quotes (`''`, `'''`, `'''''`) and magic words (`__TOC__`, `__NOTOC__` ...) are removed.
9. Lines: section titles (`== History ==`) end a paragraph and are dropped; sections about references and links
   ("References", "See also", "External links", "Notes", "Further reading" ...) are dropped whole, up to the next
   heading of the same or a higher level. Titles are dropped because they are not sentences: kept as their own
   paragraph they would become one-"sentence" segments ("Early life") that the next-sentence task pairs with
   prose, a pattern no downstream text has (WikiExtractor's BERT-era output left them out too). Each list item
   (`*`, `#`, `;`, `:`) is kept as its own paragraph without its marker: items in article bodies are mostly full
   sentences or phrases, the link lists live in the dropped sections, and a paragraph per item keeps a sentence
   from running into the next item (the mwparserfromhell renderer does the same). Leftover table rows (`|`, `!`)
   are dropped. Consecutive plain lines form one paragraph (a single newline is a space in MediaWiki); a blank
   line, a heading, a list item or a block tag ends it.
10. HTML entities are unescaped (`&amp;` -> `&`, `&nbsp;` -> space), then NFC, single spaces, empty brackets
    left by dropped templates (`()`, `( ; )`) removed, no space before `, . ; : ! ?`; a paragraph without a letter
    is dropped.
"""

import bisect
import html
import re
import unicodedata
from typing import List, Optional, Tuple

# Tags dropped with everything inside them.
_DROPPED_TAGS = frozenset({
    "ref", "references", "math", "chem", "ce", "gallery", "timeline", "score", "syntaxhighlight", "source", "code",
    "pre", "imagemap", "graph", "mapframe", "maplink", "templatedata", "templatestyles", "hiero", "inputbox",
    "categorytree", "poem", "noinclude", "includeonly", "indicator", "section", "charinsert", "table",
})
# Tags that end a paragraph (their text is kept).
_BLOCK_TAGS = frozenset({
    "br", "p", "div", "blockquote", "li", "ul", "ol", "dl", "dd", "dt", "hr", "center", "h1", "h2", "h3", "h4", "h5",
    "h6", "tr", "caption",
})
# Link namespaces (lower case) whose links are dropped, not rendered.
_DROPPED_NAMESPACES = frozenset({
    "file", "image", "media", "category", "wikipedia", "wp", "project", "template", "help", "portal", "user",
    "special", "talk", "module", "draft", "mediawiki", "timedtext", "book", "wikt", "wiktionary", "w", "s",
    "wikisource", "q", "wikiquote", "b", "wikibooks", "n", "wikinews", "v", "wikiversity", "voy", "wikivoyage",
    "commons", "c", "m", "meta", "species", "d", "wikidata", "mw", "phab", "foundation", "wmf", "outreach",
    "incubator", "oldid", "diff",
})
# Sections that hold lists of links and citations, not prose (compared lower case).
SKIPPED_SECTIONS = frozenset({
    "references", "external links", "see also", "further reading", "notes", "bibliography", "sources",
    "notes and references", "footnotes", "citations", "works cited", "general references", "gallery",
    "references and notes", "sources and further reading", "explanatory notes", "reference notes",
})

_CLOSE_TAGS = {name: re.compile(r"</" + name + r"\s*>", re.IGNORECASE) for name in _DROPPED_TAGS}
_COMMENT_OPEN = "<!--"
_COMMENT_CLOSE = "-->"
_NOWIKI = re.compile(r"<nowiki\s*/>|<nowiki(?:\s[^<>]*)?>(.*?)</nowiki\s*>", re.IGNORECASE | re.DOTALL)
# An opening or self-closing tag: the name, then attributes up to the first `>` (never past a `<`: linear).
_OPEN_TAG = re.compile(r"<([A-Za-z][A-Za-z0-9]*)(?=[\s/>])[^<>]*?(/?)>")
_ANY_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)(?=[\s/>])[^<>]*>")
_BRACE_RUN = re.compile(r"\{\{+|\}\}+")
_TABLE_EDGE = re.compile(r"^[ \t]*(\{\||\|\})", re.MULTILINE)
_BRACKETS = re.compile(r"\[\[|\]\]")
# `[scheme://target label]`; the label stops at `[`, `]` or a newline, so a scan never passes the next bracket.
_EXTERNAL_LINK = re.compile(
    r"\[(?:https?:|ftp:|ftps:|mailto:|news:|irc:|ircs:|gopher:|nntp:|telnet:|worldwind:|//)[^\s\[\]]*"
    r"(?:[ \t]([^\[\]\n]*))?\]", re.IGNORECASE)
_QUOTES = re.compile(r"'{2,}")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_HEADING = re.compile(r"(={1,6})(.+?)\1[ \t]*$")
_LIST_MARKER = re.compile(r"[*#:;]+[ \t]*")
_MARKUP_LEFT = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\|")
_SPACES = re.compile(r"[ \t\u00a0\u2009\u200b\u202f]+")
_EMPTY_BRACKETS = re.compile(r"\(\s*(?:[,;:.]\s*)*\)|\[\s*\]")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?])")
_LETTER = re.compile(r"[^\W\d_]")
_PARAGRAPH_BREAK = "\n\n"
_PLACEHOLDER = "\ue000%d\ue001"  # private-use characters: never in article text, untouched by every pass
_PLACEHOLDERS = re.compile("\ue000(\\d+)\ue001")
# Link nesting beyond this depth is never meaningful (a file caption holds links one level down); capping it keeps
# the work linear on pathological input.
_MAX_LINK_DEPTH = 8


def wikitext_to_paragraphs(wikitext: str) -> List[str]:
    """Plain-text paragraphs of an article's wikitext (see the module docstring for every rule).

    Args:
      wikitext: the page source, entities already decoded once by the XML parser (as in a dump's `<text>`).

    Returns:
      The paragraphs in page order: NFC, single spaces, each with at least one letter.
    """
    text = _drop_comments(wikitext)
    text, protected = _protect_nowiki(text)
    text = _drop_tags_with_contents(text)
    text = _drop_templates(text)
    text = _drop_tables(text)
    text = _render_links(text)
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or "", text)
    text = _ANY_TAG.sub(_tag_replacement, text)
    text = _QUOTES.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    paragraphs = []
    for paragraph in _paragraphs(text):
        if protected:
            paragraph = _PLACEHOLDERS.sub(lambda m: protected[int(m.group(1))], paragraph)
            if _MARKUP_LEFT.search(paragraph):
                continue
        paragraph = _clean(paragraph)
        if paragraph:
            paragraphs.append(paragraph)
    return paragraphs


def _drop_comments(text: str) -> str:
    if _COMMENT_OPEN not in text:
        return text
    parts = []
    position = 0
    while True:
        start = text.find(_COMMENT_OPEN, position)
        if start < 0:
            parts.append(text[position:])
            break
        parts.append(text[position:start])
        end = text.find(_COMMENT_CLOSE, start + len(_COMMENT_OPEN))
        if end < 0:
            break  # an unclosed comment hides the rest of the page
        position = end + len(_COMMENT_CLOSE)
    return "".join(parts)


def _protect_nowiki(text: str) -> Tuple[str, List[str]]:
    """`<nowiki>x</nowiki>` -> a placeholder for `x` (put back after every markup pass); `<nowiki/>` -> ""."""
    protected: List[str] = []
    if "<nowiki" not in text and "<NOWIKI" not in text:
        return text, protected

    def replace(match):
        if match.group(1) is None:
            return ""
        protected.append(html.unescape(match.group(1)))
        return _PLACEHOLDER % (len(protected) - 1)

    return _NOWIKI.sub(replace, text), protected


def _drop_tags_with_contents(text: str) -> str:
    """Drops each `_DROPPED_TAGS` element with its contents; one pass, each closing tag searched for once."""
    if "<" not in text:
        return text
    parts = []
    position = 0
    next_close = {}  # tag name -> its next closing tag at or after the last search (None: none left)
    for match in _OPEN_TAG.finditer(text):
        start = match.start()
        if start < position:
            continue  # inside an element already dropped
        name = match.group(1).lower()
        if name not in _DROPPED_TAGS:
            continue
        parts.append(text[position:start])
        position = match.end()
        if match.group(2):  # self-closing: <ref name="x" />
            continue
        if name not in next_close or (next_close[name] is not None and next_close[name].start() < position):
            next_close[name] = _CLOSE_TAGS[name].search(text, position)
        close = next_close[name]
        if close is not None:  # unclosed: only the opening tag goes
            position = close.end()
    parts.append(text[position:])
    return "".join(parts)


def _drop_templates(text: str) -> str:
    """Drops every outermost `{{...}}` / `{{{...}}}`; an unmatched brace run drops only itself.

    Brace runs are matched with a stack: an opening run of 3 (or an odd run above 3) opens a parameter `{{{`
    first, the rest opens templates `{{`; a closing run closes what the stack holds, innermost first, 3 braces for
    a parameter and 2 for a template, so `{{a|{{b}}}}` closes both templates and `{{{1}}}` one parameter.
    """
    if "{{" not in text and "}}" not in text:
        return text
    stack: List[Tuple[int, int]] = []  # (start of the opening braces, their count)
    spans: List[Tuple[int, int]] = []
    strays: List[Tuple[int, int]] = []
    for match in _BRACE_RUN.finditer(text):
        start, end = match.span()
        if text[start] == "{":
            count = end - start
            if count % 2:
                stack.append((start, 3))
                start, count = start + 3, count - 3
            for offset in range(0, count, 2):
                stack.append((start + offset, 2))
            continue
        position = start
        while end - position >= 2 and stack:
            open_at, size = stack.pop()
            position = min(end, position + size)
            _close_span(spans, open_at, position)
        if end - position >= 2:
            strays.append((position, end))
    return _drop_spans(text, spans, strays, [(start, start + size) for start, size in stack])


def _drop_tables(text: str) -> str:
    """Drops every outermost table `{| ... |}` (edges at line starts); an unmatched edge drops only itself."""
    if "{|" not in text:
        return text
    stack: List[int] = []
    spans: List[Tuple[int, int]] = []
    strays: List[Tuple[int, int]] = []
    for match in _TABLE_EDGE.finditer(text):
        if match.group(1) == "{|":
            stack.append(match.start(1))
        elif stack:
            _close_span(spans, stack.pop(), match.end())
        else:
            strays.append(match.span(1))
    return _drop_spans(text, spans, strays, [(start, start + 2) for start in stack])


def _close_span(spans: List[Tuple[int, int]], start: int, end: int) -> None:
    """Records a matched span; the spans it encloses (recorded before it, at the end of the list) go."""
    while spans and spans[-1][0] >= start:
        spans.pop()
    spans.append((start, end))


def _drop_spans(text: str, spans: List[Tuple[int, int]], strays: List[Tuple[int, int]],
                unmatched: List[Tuple[int, int]]) -> str:
    """`text` without the outermost matched spans, the stray closers and the unmatched openers outside them.

    Linear: the spans come sorted and disjoint (`_close_span`); strays and openers are few and sorted.
    """
    if not spans and not strays and not unmatched:
        return text
    drops = spans + strays + [span for span in unmatched if not _inside(spans, span[0])]
    drops.sort()
    parts = []
    position = 0
    for start, end in drops:
        if end <= position:
            continue
        parts.append(text[position:max(start, position)])
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _inside(spans: List[Tuple[int, int]], position: int) -> bool:
    index = bisect.bisect_right(spans, (position, float("inf"))) - 1
    return index >= 0 and spans[index][0] <= position < spans[index][1]


def _render_links(text: str) -> str:
    """`[[...]]` links to their text (see rule 5); nested links rendered inside out."""
    if "[[" not in text:
        return _BRACKETS.sub("", text)
    stack: List[List[str]] = [[]]
    position = 0
    for match in _BRACKETS.finditer(text):
        stack[-1].append(text[position:match.start()])
        position = match.end()
        if match.group(0) == "[[":
            if len(stack) <= _MAX_LINK_DEPTH:
                stack.append([])
        elif len(stack) > 1:
            inner = "".join(stack.pop())
            stack[-1].append(_link_text(inner))
        # a `]]` without its `[[` is dropped
    stack[-1].append(text[position:])
    while len(stack) > 1:  # unclosed `[[`: its text stays, the brackets go
        inner = "".join(stack.pop())
        stack[-1].append(inner)
    return "".join(stack[0])


def _link_text(inner: str) -> str:
    target, bar, label = inner.partition("|")
    target = target.strip()
    if target.startswith(":"):
        target = target[1:].lstrip()  # `[[:Category:X]]` is a link to the page, shown as text
        namespace = ""
    else:
        namespace = target.partition(":")[0].strip().lower() if ":" in target else ""
    if namespace and (namespace in _DROPPED_NAMESPACES
                      or (_is_language_code(namespace) and not target.partition(":")[2][:1].isspace())):
        return ""  # `[[Ali: The Movie]]` (a space after the colon) is an article title, not a language
    if bar and label.strip():
        return label
    if target.startswith("#"):
        return target[1:]
    return target.partition("#")[0]


def _is_language_code(prefix: str) -> bool:
    """Interlanguage prefixes: `fr`, `zh-yue`, `be-tarask`, `simple` (2-3 letters, optional -suffix)."""
    head, _, tail = prefix.partition("-")
    return (2 <= len(head) <= 3 and head.isascii() and head.isalpha() and (not tail or tail.isalpha())) \
        or prefix == "simple"


def _tag_replacement(match) -> str:
    return _PARAGRAPH_BREAK if match.group(1).lower() in _BLOCK_TAGS else ""


def _paragraphs(text: str):
    """Rule 9: lines to paragraphs; headings, list items and table leftovers handled, dropped sections skipped."""
    current: List[str] = []
    skip_level: Optional[int] = None
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            if current:
                yield " ".join(current)
                current = []
            continue
        first = stripped[0]
        if first == "=":
            heading = _HEADING.match(stripped)
            if heading:
                if current:
                    yield " ".join(current)
                    current = []
                level = len(heading.group(1))
                title = _clean(heading.group(2)).lower()
                if skip_level is not None and level <= skip_level:
                    skip_level = None
                if skip_level is None and title in SKIPPED_SECTIONS:
                    skip_level = level
                continue
        if skip_level is not None:
            continue
        if first in "|!{}":
            continue  # leftovers of tables
        if first in "*#:;":
            if current:
                yield " ".join(current)
                current = []
            item = _LIST_MARKER.sub("", stripped, count=1)
            if first == ";" and ":" in item:  # `; term : definition` on one line: two paragraphs
                term, _, definition = item.partition(":")
                yield term
                yield definition
            else:
                yield item
            continue
        current.append(stripped)
    if current:
        yield " ".join(current)


def _clean(paragraph: str) -> str:
    if "&" in paragraph:
        paragraph = html.unescape(paragraph)
    paragraph = unicodedata.normalize("NFC", paragraph)
    paragraph = _SPACES.sub(" ", paragraph)
    if "(" in paragraph or "[" in paragraph:
        paragraph = _EMPTY_BRACKETS.sub("", paragraph)
    paragraph = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", paragraph)).strip()
    return paragraph if _LETTER.search(paragraph) else ""
