//! Turning the agent's Markdown-ish answer into Telegram messages.
//!
//! Claude Code answers in loose Markdown. Telegram accepts a small HTML subset
//! (`parse_mode = "HTML"`) and at most [`TELEGRAM_MESSAGE_LIMIT`] characters per
//! message, counted in UTF-16 code units of the *visible* text (tags removed,
//! entities decoded). This module is pure (no I/O) and does three things:
//!
//! 1. **Conversion** ([`markdown_to_telegram_html`]), deliberately conservative.
//!    Only three constructs are recognised, everything else is escaped verbatim:
//!    * fenced code blocks: a line whose first non-blank characters are three or
//!      more backticks (optionally followed by a language) opens a block that is
//!      closed by a line made only of at least as many backticks; it becomes
//!      `<pre><code class="language-LANG">…</code></pre>` (`<pre>…</pre>`
//!      without a language). An unterminated fence is code until the end.
//!    * inline code: a run of N backticks closed by the next run of exactly N
//!      backticks *on the same line* becomes `<code>…</code>`.
//!    * bold: `**text**` on one line (opener followed by, closer preceded by
//!      non-whitespace; runs of three or more asterisks never count) becomes
//!      `<b>…</b>`. Bold may contain inline code.
//!
//!    Unpaired backticks and asterisks stay literal text. `\r\n` is normalised
//!    to `\n`. Other characters (NUL, RTL marks, …) are kept as they are.
//! 2. **Splitting** ([`split_for_telegram`], [`plain_fallback`]) into parts that
//!    each fit the limit, cutting preferably after a paragraph break (a blank
//!    line, or just before/after a code block), else after a line break, else
//!    after a whitespace run, else anywhere: but never inside an extended
//!    grapheme cluster (UAX #29, by `unicode-segmentation`: ZWJ emoji, flags,
//!    combining marks, Indic conjuncts and vowel signs, Thai marks, Hangul
//!    jamo, `\r\n`) unless that one cluster is longer than the limit, and then
//!    never inside a `char`. A preferred boundary is only
//!    used if it keeps the part at least half full; otherwise the part is cut
//!    at the limit. A code block (or bold/code span) that straddles a cut is
//!    closed at the end of one part and reopened, with the same language, at
//!    the start of the next, so each part is valid HTML on its own.
//! 3. **Overflow** ([`render_answer`]): past `max_parts` parts, the first
//!    `max_parts - 1` parts are sent, followed by a short note, and the whole
//!    Markdown is attached as [`OVERFLOW_FILE_NAME`].
//!
//! # Invariants
//!
//! With `limit' = max(limit, 2)` (a smaller limit could not hold a character
//! outside the Basic Multilingual Plane, so it is raised to 2):
//!
//! * every [`Part`] has a non-empty `plain` with `telegram_len(&plain) <= limit'`;
//! * every cut between parts is a grapheme cluster boundary of the whole text,
//!   except inside a cluster whose own length exceeds `limit'`;
//! * every `html` is well-formed Telegram HTML: only `<b>`, `<code>`, `<pre>`
//!   and `<pre><code class="language-…">`, all opened and closed within the
//!   part, properly nested, no empty elements, and `<`, `>`, `&`, `"` escaped
//!   everywhere else;
//! * `strip_html_to_plain(&part.html) == part.plain`: `plain` is exactly what
//!   Telegram will display (and count) for that part;
//! * **reassembly**: nothing is added or dropped at a cut. The whitespace or
//!   newline where a cut happens stays at the *end of the earlier part*, so
//!   `split_for_telegram(md, l).map(|p| p.plain).concat() == markdown_to_plain(md)`
//!   and `plain_fallback(md, l).concat() == md`, byte for byte;
//! * empty input gives **no parts** (the bot never sends empty messages).
//!   A part may still be whitespace-only when the input has a whitespace run
//!   about as long as the limit; Telegram rejects such a message, so
//!   [`render_answer`] drops those ([`Part::is_blank`]), and only there the
//!   concatenation loses that whitespace.

use std::ops::Range;

use unicode_segmentation::GraphemeCursor;

/// Telegram's maximum message length, in UTF-16 code units of visible text.
pub const TELEGRAM_MESSAGE_LIMIT: usize = 4096;

/// A sensible `max_parts` for [`render_answer`]: beyond it, attach a file.
#[cfg(test)]
pub const DEFAULT_MAX_PARTS: usize = 4;

/// File name of the document attached by [`render_answer`] on overflow.
pub const OVERFLOW_FILE_NAME: &str = "answer.md";

/// Smallest usable limit: one character may take two UTF-16 code units.
const MIN_LIMIT: usize = 2;

/// Longest language name kept from a fence's info string.
const MAX_LANG_LEN: usize = 32;

/// Markdown of the note that replaces the parts beyond `max_parts`.
const OVERFLOW_NOTE: &str = "The full answer is attached as `answer.md`.";

/// One Telegram message of a split answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    /// Body to send with `parse_mode = "HTML"`; valid on its own.
    pub html: String,
    /// The visible text of `html` (what Telegram displays and counts).
    pub plain: String,
}

impl Part {
    /// Length of the visible text as Telegram counts it (UTF-16 code units).
    #[cfg(test)]
    pub fn telegram_len(&self) -> usize {
        telegram_len(&self.plain)
    }

    /// Whether the visible text is only whitespace (Telegram would reject it).
    pub fn is_blank(&self) -> bool {
        self.plain.trim().is_empty()
    }
}

/// What to send for one answer: see [`render_answer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Messages to send, in order; none of them is blank.
    pub parts: Vec<Part>,
    /// On overflow, `(file name, full original Markdown)` to send as a document.
    pub overflow_document: Option<(String, String)>,
}

impl Rendered {
    /// Whether there is nothing to send at all (empty or blank answer).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.overflow_document.is_none()
    }
}

/// Length of `text` as Telegram counts it: UTF-16 code units.
pub fn telegram_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Escapes `&`, `<`, `>` and `"` for Telegram's HTML parse mode.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

/// Converts the whole answer to one Telegram HTML string (no length limit).
///
/// See the module documentation for the recognised constructs.
#[cfg(test)]
pub fn markdown_to_telegram_html(markdown: &str) -> String {
    let doc = parse(markdown);
    doc.render(0..doc.plain.len())
}

/// The visible text of [`markdown_to_telegram_html`]`(markdown)`.
///
/// It is `markdown` with `\r\n` turned into `\n`, fence lines removed (with
/// the line break just before a closing fence), and the backticks of inline
/// code and the `**` of bold removed. This is what the parts of
/// [`split_for_telegram`] concatenate to.
#[cfg(test)]
pub fn markdown_to_plain(markdown: &str) -> String {
    parse(markdown).plain
}

/// Converts and splits an answer into parts of at most `limit` UTF-16 code
/// units of visible text each (`limit` is raised to 2 if smaller).
///
/// Returns no parts for an empty input. The concatenated `plain` of the parts
/// equals [`markdown_to_plain`]`(markdown)`; see the module documentation.
pub fn split_for_telegram(markdown: &str, limit: usize) -> Vec<Part> {
    let doc = parse(markdown);
    let strong = doc.block_boundaries();
    split_ranges(&doc.plain, limit, &strong)
        .into_iter()
        .map(|range| Part {
            html: doc.render(range.clone()),
            plain: doc.plain[range].to_string(),
        })
        .collect()
}

/// Splits the raw Markdown as plain text, for resending without formatting
/// when Telegram refuses the HTML. Same limit and boundary rules as
/// [`split_for_telegram`]; the parts concatenate to `markdown` exactly.
#[cfg(test)]
pub fn plain_fallback(markdown: &str, limit: usize) -> Vec<String> {
    split_ranges(markdown, limit, &[])
        .into_iter()
        .map(|range| markdown[range].to_string())
        .collect()
}

/// Decides what to send for an answer.
///
/// Splits with [`split_for_telegram`] and drops blank parts. If at most
/// `max_parts` remain (`max_parts` is raised to 1 if 0), they are all sent
/// and there is no document. Otherwise the first `max_parts - 1` parts are
/// kept, a final short note says the full answer is attached, and
/// `overflow_document` holds ([`OVERFLOW_FILE_NAME`], the original Markdown).
pub fn render_answer(markdown: &str, limit: usize, max_parts: usize) -> Rendered {
    let parts: Vec<Part> = split_for_telegram(markdown, limit)
        .into_iter()
        .filter(|part| !part.is_blank())
        .collect();
    let max_parts = max_parts.max(1);
    if parts.len() <= max_parts {
        return Rendered {
            parts,
            overflow_document: None,
        };
    }
    let mut kept: Vec<Part> = parts.into_iter().take(max_parts - 1).collect();
    kept.push(overflow_note(limit));
    Rendered {
        parts: kept,
        overflow_document: Some((OVERFLOW_FILE_NAME.to_string(), markdown.to_string())),
    }
}

/// Visible text of an HTML string produced by this module: removes tags and
/// decodes `&lt;`, `&gt;`, `&amp;`, `&quot;` and numeric (`&#…;`, `&#x…;`)
/// entities. Anything that is not a known entity is kept literally. Not a
/// general HTML parser.
#[cfg(test)]
pub fn strip_html_to_plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('<') {
            rest = rest.find('>').map_or("", |end| &rest[end + 1..]);
        } else if let Some((c, len)) = decode_entity(rest) {
            out.push(c);
            rest = &rest[len..];
        } else {
            out.push('&');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The note ending an overflowing answer, cut to `limit` if need be.
fn overflow_note(limit: usize) -> Part {
    split_for_telegram(OVERFLOW_NOTE, limit)
        .into_iter()
        .next()
        .unwrap_or_default()
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
}

/// Decodes the entity at the start of `s` (which starts with `&`): the
/// character and the entity's length in bytes.
#[cfg(test)]
fn decode_entity(s: &str) -> Option<(char, usize)> {
    let end = s.bytes().take(12).position(|b| b == b';')?;
    let c = match &s[1..end] {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        name => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    };
    Some((c, end + 1))
}

// ---------------------------------------------------------------------------
// Document model: the visible text plus styled spans covering it.
// ---------------------------------------------------------------------------

/// Formatting of a run of visible text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Style {
    Text,
    Bold,
    Code,
    BoldCode,
    /// A fenced code block with its sanitised language (may be empty).
    Pre(String),
}

impl Style {
    fn inline(bold: bool, code: bool) -> Self {
        match (bold, code) {
            (false, false) => Style::Text,
            (true, false) => Style::Bold,
            (false, true) => Style::Code,
            (true, true) => Style::BoldCode,
        }
    }

    fn open(&self, out: &mut String) {
        match self {
            Style::Text => {}
            Style::Bold => out.push_str("<b>"),
            Style::Code => out.push_str("<code>"),
            Style::BoldCode => out.push_str("<b><code>"),
            Style::Pre(lang) if lang.is_empty() => out.push_str("<pre>"),
            Style::Pre(lang) => {
                out.push_str("<pre><code class=\"language-");
                push_escaped(out, lang);
                out.push_str("\">");
            }
        }
    }

    fn close(&self, out: &mut String) {
        match self {
            Style::Text => {}
            Style::Bold => out.push_str("</b>"),
            Style::Code => out.push_str("</code>"),
            Style::BoldCode => out.push_str("</code></b>"),
            Style::Pre(lang) if lang.is_empty() => out.push_str("</pre>"),
            Style::Pre(_) => out.push_str("</code></pre>"),
        }
    }
}

#[derive(Debug)]
struct Span {
    style: Style,
    range: Range<usize>,
}

/// Visible text and the non-empty, contiguous spans that cover it in order.
#[derive(Debug, Default)]
struct Doc {
    plain: String,
    spans: Vec<Span>,
}

impl Doc {
    /// Appends visible text, merging with the previous inline span if alike.
    fn push(&mut self, style: Style, text: &str) {
        if text.is_empty() {
            return;
        }
        let start = self.plain.len();
        self.plain.push_str(text);
        let end = self.plain.len();
        match self.spans.last_mut() {
            Some(last) if last.style == style && !matches!(style, Style::Pre(_)) => {
                last.range.end = end;
            }
            _ => self.spans.push(Span {
                style,
                range: start..end,
            }),
        }
    }

    /// HTML for the visible text in `range`: each span is opened and closed
    /// inside the range, so the result is valid on its own.
    fn render(&self, range: Range<usize>) -> String {
        let mut out = String::with_capacity(range.len() + 32);
        let first = self.spans.partition_point(|s| s.range.end <= range.start);
        for span in self.spans[first..]
            .iter()
            .take_while(|s| s.range.start < range.end)
        {
            let start = span.range.start.max(range.start);
            let end = span.range.end.min(range.end);
            span.style.open(&mut out);
            push_escaped(&mut out, &self.plain[start..end]);
            span.style.close(&mut out);
        }
        out
    }

    /// Sorted offsets just before each code block and just after it (past the
    /// line break that follows it): cut points as good as a blank line.
    fn block_boundaries(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for span in self
            .spans
            .iter()
            .filter(|s| matches!(s.style, Style::Pre(_)))
        {
            out.push(span.range.start);
            let end = span.range.end;
            out.push(end + usize::from(self.plain[end..].starts_with('\n')));
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Parsing: fenced blocks first, then inline code and bold line by line.
// ---------------------------------------------------------------------------

fn parse(markdown: &str) -> Doc {
    let text = markdown.replace("\r\n", "\n");
    let mut doc = Doc::default();
    let mut prose_start = 0;
    let mut pos = 0;
    while pos < text.len() {
        let (line, next) = line_at(&text, pos);
        match Fence::open(line) {
            Some(fence) => {
                parse_inline(&text[prose_start..pos], &mut doc);
                let (content, resume) = fence.body(&text, next);
                doc.push(Style::Pre(fence.lang), content);
                pos = resume;
                prose_start = resume;
            }
            None => pos = next,
        }
    }
    parse_inline(&text[prose_start..], &mut doc);
    doc
}

/// The line starting at `pos` (without its `\n`) and where the next one starts.
fn line_at(text: &str, pos: usize) -> (&str, usize) {
    match text[pos..].find('\n') {
        Some(i) => (&text[pos..pos + i], pos + i + 1),
        None => (&text[pos..], text.len()),
    }
}

/// An opening code fence.
struct Fence {
    ticks: usize,
    lang: String,
}

impl Fence {
    /// Recognises an opening fence line: optional indentation, 3+ backticks,
    /// then an info string without backticks.
    fn open(line: &str) -> Option<Fence> {
        let rest = line.trim_start_matches([' ', '\t']);
        let ticks = rest.len() - rest.trim_start_matches('`').len();
        let info = &rest[ticks..];
        (ticks >= 3 && !info.contains('`')).then(|| Fence {
            ticks,
            lang: sanitize_lang(info),
        })
    }

    fn closes(&self, line: &str) -> bool {
        let line = line.trim();
        line.len() >= self.ticks && line.bytes().all(|b| b == b'`')
    }

    /// The block content starting at `start`, and where the text resumes
    /// (at the closing fence's line break, which stays visible text). The
    /// line break just before the closing fence is not part of the content.
    fn body<'a>(&self, text: &'a str, start: usize) -> (&'a str, usize) {
        let mut pos = start;
        while pos < text.len() {
            let (line, next) = line_at(text, pos);
            if self.closes(line) {
                let end = if pos > start { pos - 1 } else { pos };
                return (&text[start..end], pos + line.len());
            }
            pos = next;
        }
        (&text[start..], text.len())
    }
}

/// Keeps the leading `[A-Za-z0-9+#._-]` characters of the info string.
fn sanitize_lang(info: &str) -> String {
    info.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "+#._-".contains(*c))
        .take(MAX_LANG_LEN)
        .collect()
}

fn parse_inline(text: &str, doc: &mut Doc) {
    for line in text.split_inclusive('\n') {
        parse_line(line, doc);
    }
}

/// A piece of one line of prose.
#[derive(Debug)]
enum Piece {
    /// Literal text.
    Text(Range<usize>),
    /// Inline code content (its backtick delimiters are dropped).
    Code(Range<usize>),
    /// A run of exactly two asterisks that may delimit bold.
    Star {
        at: usize,
        can_open: bool,
        can_close: bool,
    },
}

fn parse_line(line: &str, doc: &mut Doc) {
    let pieces = line_pieces(line);
    let delimiters = pair_stars(&pieces);
    let mut bold = false;
    for (piece, is_delimiter) in pieces.iter().zip(delimiters) {
        match piece {
            Piece::Star { .. } if is_delimiter => bold = !bold,
            Piece::Star { at, .. } => doc.push(Style::inline(bold, false), &line[*at..at + 2]),
            Piece::Text(r) => doc.push(Style::inline(bold, false), &line[r.clone()]),
            Piece::Code(r) => doc.push(Style::inline(bold, true), &line[r.clone()]),
        }
    }
}

fn line_pieces(line: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    for (open, close) in code_spans(&backtick_runs(line)) {
        push_text_pieces(line, pos..open.start, &mut pieces);
        pieces.push(Piece::Code(open.end..close.start));
        pos = close.end;
    }
    push_text_pieces(line, pos..line.len(), &mut pieces);
    pieces
}

fn backtick_runs(line: &str) -> Vec<Range<usize>> {
    let bytes = line.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i] == b'`' {
            i += 1;
        }
        if i > start {
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    runs
}

/// Pairs each backtick run with the next run of the same length; returns the
/// (opening, closing) runs of the resulting code spans.
fn code_spans(runs: &[Range<usize>]) -> Vec<(Range<usize>, Range<usize>)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < runs.len() {
        let len = runs[i].len();
        match runs[i + 1..].iter().position(|r| r.len() == len) {
            Some(k) => {
                spans.push((runs[i].clone(), runs[i + 1 + k].clone()));
                i += k + 2;
            }
            None => i += 1,
        }
    }
    spans
}

/// Splits `line[range]` into text and `**` candidates.
fn push_text_pieces(line: &str, range: Range<usize>, pieces: &mut Vec<Piece>) {
    let bytes = line.as_bytes();
    let mut text_start = range.start;
    let mut i = range.start;
    while i < range.end {
        if bytes[i] != b'*' {
            i += 1;
            continue;
        }
        let run_start = i;
        while i < range.end && bytes[i] == b'*' {
            i += 1;
        }
        if i - run_start == 2 {
            push_text_piece(pieces, text_start..run_start);
            pieces.push(Piece::Star {
                at: run_start,
                can_open: line[i..].chars().next().is_some_and(|c| !c.is_whitespace()),
                can_close: line[..run_start]
                    .chars()
                    .next_back()
                    .is_some_and(|c| !c.is_whitespace()),
            });
            text_start = i;
        }
    }
    push_text_piece(pieces, text_start..range.end);
}

fn push_text_piece(pieces: &mut Vec<Piece>, range: Range<usize>) {
    if !range.is_empty() {
        pieces.push(Piece::Text(range));
    }
}

/// Marks which `**` candidates are bold delimiters: left to right, an opener
/// pairs with the next candidate that can close.
fn pair_stars(pieces: &[Piece]) -> Vec<bool> {
    let mut delimiter = vec![false; pieces.len()];
    let mut pending = None;
    for (i, piece) in pieces.iter().enumerate() {
        if let Piece::Star {
            can_open,
            can_close,
            ..
        } = *piece
        {
            match pending {
                Some(open) if can_close => {
                    delimiter[open] = true;
                    delimiter[i] = true;
                    pending = None;
                }
                None if can_open => pending = Some(i),
                _ => {}
            }
        }
    }
    delimiter
}

// ---------------------------------------------------------------------------
// Splitting: choosing cut points in the visible text.
// ---------------------------------------------------------------------------

/// How good a cut point is (higher is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    None,
    Word,
    Line,
    Paragraph,
}

/// Consecutive non-empty ranges covering `text`, each within `limit` UTF-16
/// code units. `strong` lists extra paragraph-level cut points (sorted).
fn split_ranges(text: &str, limit: usize, strong: &[usize]) -> Vec<Range<usize>> {
    let limit = limit.max(MIN_LIMIT);
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let end = next_cut(text, start, limit, strong);
        ranges.push(start..end);
        start = end;
    }
    ranges
}

fn next_cut(text: &str, start: usize, limit: usize, strong: &[usize]) -> usize {
    let max_end = window_end(text, start, limit);
    if max_end == text.len() {
        return max_end;
    }
    preferred_cut(text, start, max_end, limit / 2, strong)
        .unwrap_or_else(|| hard_cut(text, start, max_end))
}

/// The largest char boundary `end` with `text[start..end]` within `limit`.
fn window_end(text: &str, start: usize, limit: usize) -> usize {
    let mut units = 0;
    for (i, c) in text[start..].char_indices() {
        units += c.len_utf16();
        if units > limit {
            return start + i;
        }
    }
    text.len()
}

/// The latest cut point of the best level in `start..=max_end` that keeps at
/// least `min_units` in the part.
fn preferred_cut(
    text: &str,
    start: usize,
    max_end: usize,
    min_units: usize,
    strong: &[usize],
) -> Option<usize> {
    let mut units = telegram_len(&text[start..max_end]);
    let mut best: Option<(Level, usize)> = None;
    let mut p = max_end;
    while p > start && units >= min_units {
        let level = boundary_level(text, p, strong);
        // Every cut is a grapheme boundary (a space may carry combining marks).
        if level > best.map_or(Level::None, |(l, _)| l) && is_grapheme_boundary(text, p) {
            best = Some((level, p));
            if level == Level::Paragraph {
                break;
            }
        }
        let c = prev_char(text, p);
        units -= c.len_utf16();
        p -= c.len_utf8();
    }
    best.map(|(_, p)| p)
}

/// Classifies the char boundary `p` (`0 < p < text.len()`) as a cut point.
/// Cuts go after a whole run of line breaks or whitespace, never inside it.
fn boundary_level(text: &str, p: usize, strong: &[usize]) -> Level {
    if strong.binary_search(&p).is_ok() {
        return Level::Paragraph;
    }
    let prev = prev_char(text, p);
    let Some(next) = text[p..].chars().next() else {
        return Level::None;
    };
    if next == '\n' || next == '\r' {
        Level::None
    } else if prev == '\n' {
        let line_before = text[..p - 1].trim_end_matches([' ', '\t', '\r']);
        if line_before.ends_with('\n') {
            Level::Paragraph
        } else {
            Level::Line
        }
    } else if prev.is_whitespace() && !next.is_whitespace() {
        Level::Word
    } else {
        Level::None
    }
}

/// Cuts at the last grapheme cluster boundary in `start+1..=max_end`; at
/// `max_end` (a char boundary) when one cluster covers the whole window.
fn hard_cut(text: &str, start: usize, max_end: usize) -> usize {
    let mut cursor = GraphemeCursor::new(max_end, text.len(), true);
    // With the whole text as the one chunk, the cursor never asks for more context.
    if cursor.is_boundary(text, 0) == Ok(true) {
        return max_end;
    }
    match cursor.prev_boundary(text, 0) {
        Ok(Some(p)) if p > start => p,
        _ => max_end,
    }
}

/// Whether the char boundary `p` is an extended grapheme cluster boundary of `text`.
fn is_grapheme_boundary(text: &str, p: usize) -> bool {
    GraphemeCursor::new(p, text.len(), true).is_boundary(text, 0) == Ok(true)
}

fn prev_char(text: &str, p: usize) -> char {
    text[..p].chars().next_back().unwrap_or('\0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // -- helpers ------------------------------------------------------------

    /// Asserts `html` is valid Telegram HTML as this module produces it:
    /// known tags only, properly nested, nothing empty, entities escaped.
    fn assert_well_formed(html: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = html;
        while let Some(c) = rest.chars().next() {
            match c {
                '<' => {
                    let end = rest.find('>').expect("unterminated tag");
                    open_or_close(&rest[1..end], &mut stack, html);
                    rest = &rest[end + 1..];
                }
                '&' => {
                    let entity = ["&lt;", "&gt;", "&amp;", "&quot;"]
                        .into_iter()
                        .find(|e| rest.starts_with(e))
                        .unwrap_or_else(|| panic!("bare & in {html:?}"));
                    rest = &rest[entity.len()..];
                }
                '>' | '"' => panic!("unescaped {c:?} in {html:?}"),
                _ => rest = &rest[c.len_utf8()..],
            }
        }
        assert!(stack.is_empty(), "unclosed {stack:?} in {html:?}");
        for empty in ["<b></b>", "<code></code>", "<pre></pre>", "\"></code>"] {
            assert!(!html.contains(empty), "empty element in {html:?}");
        }
    }

    fn open_or_close<'a>(tag: &'a str, stack: &mut Vec<&'a str>, html: &str) {
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name), "bad close in {html:?}");
            return;
        }
        let name = match tag {
            "b" | "pre" => {
                assert!(stack.is_empty(), "nested <{tag}> in {html:?}");
                tag
            }
            "code" => {
                assert!(
                    stack.is_empty() || stack == &["b"],
                    "bad <code> in {html:?}"
                );
                tag
            }
            _ => {
                let lang = tag
                    .strip_prefix("code class=\"language-")
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("unknown tag <{tag}> in {html:?}"));
                assert!(!lang.is_empty() && lang.chars().all(|c| c.is_ascii_graphic()));
                assert_eq!(stack, &["pre"], "language code outside pre in {html:?}");
                "code"
            }
        };
        stack.push(name);
    }

    #[test]
    fn checker_rejects_bad_html() {
        let bad = [
            "<b>x",
            "x</b>",
            "<b><i>x</i></b>",
            "<i>x</i>",
            "a & b",
            "a > b",
            "<b></b>",
            "<b><pre>x</pre></b>",
            "<code class=\"language-x\">y</code>",
            "<pre><b>x</b></pre>",
            "<b>x<code>y</b></code>",
        ];
        for html in bad {
            let result = std::panic::catch_unwind(|| assert_well_formed(html));
            assert!(result.is_err(), "accepted {html:?}");
        }
        assert_well_formed(
            "<b>x<code>y</code></b><pre><code class=\"language-c\">&lt;</code></pre>",
        );
    }

    /// Checks every invariant of `split_for_telegram` for one input.
    fn check_split(markdown: &str, limit: usize) -> Vec<Part> {
        let parts = split_for_telegram(markdown, limit);
        for part in &parts {
            assert!(!part.plain.is_empty());
            assert!(part.telegram_len() <= limit.max(2), "too long: {part:?}");
            assert_well_formed(&part.html);
            assert_eq!(strip_html_to_plain(&part.html), part.plain);
        }
        let joined: String = parts.iter().map(|p| p.plain.as_str()).collect();
        assert_eq!(joined, markdown_to_plain(markdown));
        parts
    }

    fn check_fallback(markdown: &str, limit: usize) -> Vec<String> {
        let parts = plain_fallback(markdown, limit);
        for part in &parts {
            assert!(!part.is_empty());
            assert!(telegram_len(part) <= limit.max(2));
        }
        assert_eq!(parts.concat(), markdown);
        parts
    }

    // -- conversion ---------------------------------------------------------

    #[test]
    fn escapes_html_specials() {
        assert_eq!(escape_html("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
        assert_eq!(escape_html("plain ünïcödé"), "plain ünïcödé");
    }

    #[test]
    fn specials_stay_intact_everywhere() {
        let md = "if a < b && c > d\n`x<y>&z`\n**<&>**\n```\n<T>&&\n```";
        let html = markdown_to_telegram_html(md);
        assert_eq!(
            html,
            "if a &lt; b &amp;&amp; c &gt; d\n<code>x&lt;y&gt;&amp;z</code>\n\
             <b>&lt;&amp;&gt;</b>\n<pre>&lt;T&gt;&amp;&amp;</pre>"
        );
        assert_well_formed(&html);
        assert_eq!(
            strip_html_to_plain(&html),
            "if a < b && c > d\nx<y>&z\n<&>\n<T>&&"
        );
    }

    #[test]
    fn converts_bold_and_inline_code() {
        assert_eq!(
            markdown_to_telegram_html("Run **`cargo test`** now, `x` **y**"),
            "Run <b><code>cargo test</code></b> now, <code>x</code> <b>y</b>"
        );
        assert_eq!(markdown_to_telegram_html("``a ` b``"), "<code>a ` b</code>");
    }

    #[test]
    fn converts_fenced_blocks() {
        let md = "Intro:\n```rust\nfn main() {}\n```\nAfter.";
        assert_eq!(
            markdown_to_telegram_html(md),
            "Intro:\n<pre><code class=\"language-rust\">fn main() {}</code></pre>\nAfter."
        );
        assert_eq!(markdown_to_plain(md), "Intro:\nfn main() {}\nAfter.");
        assert_eq!(markdown_to_telegram_html("```\nx\n```"), "<pre>x</pre>");
        // Indented fence, longer closing fence, markup inside is literal.
        assert_eq!(
            markdown_to_telegram_html("  ```sh\n**a** `b`\n  `````\n"),
            "<pre><code class=\"language-sh\">**a** `b`</code></pre>\n"
        );
    }

    #[test]
    fn unterminated_fence_is_code_until_the_end() {
        assert_eq!(
            markdown_to_telegram_html("text\n```py\nprint(1)\n**x**"),
            "text\n<pre><code class=\"language-py\">print(1)\n**x**</code></pre>"
        );
        // An opening fence with no content produces nothing at all.
        assert_eq!(markdown_to_telegram_html("a\n```rust"), "a\n");
        assert_eq!(markdown_to_telegram_html("```\n```\nb"), "\nb");
    }

    #[test]
    fn fence_language_is_sanitised() {
        let html = markdown_to_telegram_html("```rust,ignore\nx\n```");
        assert!(
            html.starts_with("<pre><code class=\"language-rust\">"),
            "{html}"
        );
        let html = markdown_to_telegram_html("``` \"><script>\nx\n```");
        assert!(html.starts_with("<pre>x"), "{html}");
        assert_well_formed(&html);
    }

    #[test]
    fn backticks_in_info_string_mean_inline_code() {
        assert_eq!(markdown_to_telegram_html("```a```"), "<code>a</code>");
    }

    #[test]
    fn unbalanced_markers_stay_literal() {
        for md in [
            "`oops",
            "a ` b `` c",
            "**not closed",
            "** a **",
            "*x*",
            "***x***",
            "2 * 3",
        ] {
            assert_eq!(markdown_to_telegram_html(md), escape_html(md), "{md}");
        }
        // Inline markers do not pair across lines.
        assert_eq!(markdown_to_telegram_html("`a\nb`"), "`a\nb`");
        assert_eq!(markdown_to_telegram_html("**a\nb**"), "**a\nb**");
    }

    #[test]
    fn crlf_is_normalised() {
        let md = "line1\r\nline2\r\n\r\n```rust\r\nfn main() {}\r\n```\r\nend\r";
        assert_eq!(
            markdown_to_telegram_html(md),
            "line1\nline2\n\n<pre><code class=\"language-rust\">fn main() {}</code></pre>\nend\r"
        );
    }

    #[test]
    fn strip_decodes_entities_and_removes_tags() {
        assert_eq!(
            strip_html_to_plain("<b>a&lt;&gt;&amp;&quot;</b>&#65;&#x42;&#X43; & &bogus; &#xZZ;"),
            "a<>&\"ABC & &bogus; &#xZZ;"
        );
        assert_eq!(strip_html_to_plain("<pre>x"), "x");
        assert_eq!(strip_html_to_plain("x<unterminated"), "x");
    }

    // -- splitting ----------------------------------------------------------

    #[test]
    fn empty_input_gives_no_parts() {
        assert!(split_for_telegram("", 4096).is_empty());
        assert!(plain_fallback("", 4096).is_empty());
        assert!(render_answer("", 4096, 4).is_empty());
    }

    #[test]
    fn exactly_the_limit_is_one_part() {
        let md = "a".repeat(4096);
        assert_eq!(check_split(&md, TELEGRAM_MESSAGE_LIMIT).len(), 1);
        assert_eq!(check_fallback(&md, TELEGRAM_MESSAGE_LIMIT).len(), 1);
        // Markup does not count: 4096 visible characters in bold fit.
        let md = format!("**{}**", "b".repeat(4096));
        let parts = check_split(&md, TELEGRAM_MESSAGE_LIMIT);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].html.starts_with("<b>"));
        // Escaped characters count once.
        assert_eq!(check_split(&"<".repeat(4096), 4096).len(), 1);
    }

    #[test]
    fn one_over_the_limit_is_two_parts() {
        let md = "a".repeat(4097);
        let parts = check_split(&md, TELEGRAM_MESSAGE_LIMIT);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].telegram_len(), 4096);
        assert_eq!(parts[1].plain, "a");
        assert_eq!(check_fallback(&md, TELEGRAM_MESSAGE_LIMIT).len(), 2);
    }

    #[test]
    fn limit_counts_utf16_units_not_chars() {
        // 2048 astral emoji = 4096 UTF-16 units: fits; one more does not.
        assert_eq!(check_split(&"😀".repeat(2048), 4096).len(), 1);
        let parts = check_split(&"😀".repeat(2049), 4096);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].plain, "😀");
        // An odd limit never splits a surrogate pair.
        let parts = check_split(&"😀".repeat(10), 5);
        assert!(parts.iter().all(|p| p.plain == "😀😀"));
    }

    #[test]
    fn tiny_limits_are_raised_to_two() {
        let parts = check_split("😀a😀", 0);
        let plains: Vec<_> = parts.iter().map(|p| p.plain.as_str()).collect();
        assert_eq!(plains, ["😀", "a", "😀"]);
        assert_eq!(check_fallback("abc", 1), ["ab", "c"]);
    }

    /// A 10,000-character answer with prose and several code blocks, one of
    /// them longer than a message.
    fn long_answer() -> String {
        let prose = "Some explanation with `inline` code and **bold** text. ".repeat(20);
        let code: String = (0..150)
            .map(|i| format!("    let value_{i} = compute({i}) << 2; // <&>\n"))
            .collect();
        let mut md = String::new();
        for i in 0..3 {
            md.push_str(&format!(
                "{prose}\n\n```rust\nfn f{i}() {{}}\n```\n\n{prose}\n\n"
            ));
        }
        md.push_str(&format!("```rust\n{code}```\n\nDone."));
        md
    }

    #[test]
    fn long_answer_with_code_blocks_is_split_and_reopened() {
        let md = long_answer();
        assert!(md.chars().count() > 10_000, "{}", md.chars().count());
        let parts = check_split(&md, TELEGRAM_MESSAGE_LIMIT);
        assert!(parts.len() >= 3);
        let opener = "<pre><code class=\"language-rust\">";
        let reopened = parts
            .windows(2)
            .filter(|w| w[0].html.ends_with("</code></pre>") && w[1].html.starts_with(opener))
            .count();
        assert!(reopened >= 1, "no code block continued across parts");
        // Cut points are clean: each part but the last ends with a line break.
        for part in &parts[..parts.len() - 1] {
            assert!(
                part.plain.ends_with('\n'),
                "{:?}",
                &part.plain[part.plain.len() - 20..]
            );
        }
        check_fallback(&md, TELEGRAM_MESSAGE_LIMIT);
    }

    #[test]
    fn short_code_blocks_are_not_split_when_a_boundary_allows() {
        let md = format!("{}\n```\n{}\n```\nafter", "a".repeat(60), "c\n".repeat(30));
        let parts = check_split(&md, 100);
        assert_eq!(parts[0].plain, format!("{}\n", "a".repeat(60)));
        assert!(parts[1].html.starts_with("<pre>") && parts[1].html.contains("</pre>"));
    }

    #[test]
    fn prefers_paragraph_then_line_then_word_boundaries() {
        let para = format!(
            "{}\n\n{}\n{} {}",
            "a".repeat(30),
            "b".repeat(10),
            "c".repeat(5),
            "d".repeat(30)
        );
        assert_eq!(
            check_split(&para, 50)[0].plain,
            format!("{}\n\n", "a".repeat(30))
        );
        let line = format!(
            "{} {}\n{} {}",
            "a".repeat(20),
            "b".repeat(10),
            "c".repeat(5),
            "d".repeat(30)
        );
        assert_eq!(
            check_split(&line, 50)[0].plain,
            format!("{} {}\n", "a".repeat(20), "b".repeat(10))
        );
        let word = format!("{} {}   {}", "a".repeat(20), "b".repeat(10), "c".repeat(30));
        assert_eq!(
            check_split(&word, 50)[0].plain,
            format!("{} {}   ", "a".repeat(20), "b".repeat(10))
        );
        // A boundary that would leave the part less than half full is ignored.
        let early = format!("ab\n\n{}", "x".repeat(200));
        assert_eq!(check_split(&early, 50)[0].telegram_len(), 50);
    }

    #[test]
    fn single_long_line_without_spaces() {
        let md = "x".repeat(20_000);
        let parts = check_split(&md, TELEGRAM_MESSAGE_LIMIT);
        let lens: Vec<_> = parts.iter().map(Part::telegram_len).collect();
        assert_eq!(lens, [4096, 4096, 4096, 4096, 3616]);
        assert_eq!(check_fallback(&md, TELEGRAM_MESSAGE_LIMIT).len(), 5);
    }

    #[test]
    fn zwj_emoji_are_not_broken() {
        let family = "👨‍👩‍👧‍👦";
        assert_eq!(telegram_len(family), 11);
        for limit in [20, 50, 4096] {
            let md = family.repeat(1000);
            for part in check_split(&md, limit) {
                assert_eq!(part.plain.replace(family, ""), "", "limit {limit}");
            }
            for part in check_fallback(&md, limit) {
                assert_eq!(part.replace(family, ""), "", "limit {limit}");
            }
        }
    }

    #[test]
    fn flags_and_modifiers_are_not_broken() {
        let flags = "🇫🇷🇩🇪🇯🇵".repeat(50);
        for part in check_split(&flags, 11) {
            assert_eq!(part.plain.chars().count() % 2, 0, "{:?}", part.plain);
        }
        let thumbs = "👍🏽".repeat(100);
        for part in check_split(&thumbs, 13) {
            assert_eq!(part.plain.replace("👍🏽", ""), "");
        }
        let accents = "e\u{301}".repeat(100);
        for part in check_fallback(&accents, 7) {
            assert!(part.starts_with('e'));
        }
    }

    #[test]
    fn rtl_text_is_split_at_words() {
        let md = "שָׁלוֹם עוֹלָם, مرحبا بالعالم ".repeat(200);
        let plain: Vec<String> = check_split(&md, 100).into_iter().map(|p| p.plain).collect();
        for part in &plain {
            assert!(part.ends_with(' ') || *part == md[md.len() - part.len()..]);
        }
        assert_cuts_on_graphemes(&md, &plain, 100);
        assert_cuts_on_graphemes(&md, &check_fallback(&md, 100), 100);
    }

    /// Words whose grapheme clusters span several chars: Devanagari conjuncts
    /// and vowel signs, Thai vowel and tone marks, Hangul syllables written as
    /// conjoining jamo (L V T), beside precomposed Hangul.
    const CLUSTERED_WORDS: &[&str] = &[
        "नमस्ते",
        "क्षत्रिय",
        "हिन्दी",
        "श्रीमान्",
        "ที่นี่",
        "น้ำ",
        "กำลัง",
        "สวัสดีครับ",
        "\u{1112}\u{1161}\u{11AB}\u{1100}\u{1173}\u{11AF}",
        "\u{1100}\u{1161}\u{11A8}",
        "한국어",
    ];

    /// Asserts that every cut between `parts` (which concatenate to `text`) is
    /// an extended grapheme cluster boundary, or lies inside a cluster that
    /// alone is longer than `limit`.
    fn assert_cuts_on_graphemes<S: AsRef<str>>(text: &str, parts: &[S], limit: usize) {
        use unicode_segmentation::UnicodeSegmentation;
        let clusters: Vec<(usize, &str)> = text.grapheme_indices(true).collect();
        let mut cut = 0;
        for part in &parts[..parts.len().saturating_sub(1)] {
            cut += part.as_ref().len();
            let at = clusters.partition_point(|(start, _)| *start <= cut) - 1;
            let (start, cluster) = clusters[at];
            assert!(
                start == cut || telegram_len(cluster) > limit.max(2),
                "cut at byte {cut} splits the cluster {cluster:?} (limit {limit}) in {text:?}"
            );
        }
    }

    #[test]
    fn indic_thai_and_hangul_clusters_are_not_broken() {
        for word in CLUSTERED_WORDS {
            let text = word.repeat(60);
            for limit in [2, 3, 5, 7, 11, 64] {
                let plain: Vec<String> = check_split(&text, limit)
                    .into_iter()
                    .map(|p| p.plain)
                    .collect();
                assert_cuts_on_graphemes(&text, &plain, limit);
                assert_cuts_on_graphemes(&text, &check_fallback(&text, limit), limit);
            }
        }
    }

    #[test]
    fn a_cluster_longer_than_the_limit_is_cut_at_chars() {
        let zalgo = format!("a{}b", "\u{301}".repeat(50));
        let parts = check_fallback(&zalgo, 8);
        assert_eq!(parts.len(), 7);
        assert_cuts_on_graphemes(&zalgo, &parts, 8);
    }

    #[test]
    fn a_space_carrying_a_combining_mark_is_not_a_word_break() {
        let text = format!("{} \u{301}{}", "a".repeat(10), "b".repeat(20));
        let parts = check_fallback(&text, 16);
        assert_eq!(parts[0], "a".repeat(10) + " \u{301}" + &"b".repeat(4));
    }

    #[test]
    fn nul_bytes_are_kept() {
        let md = "a\0b `\0` **\0**\n```\n\0\n```";
        let html = markdown_to_telegram_html(md);
        assert_eq!(html, "a\0b <code>\0</code> <b>\0</b>\n<pre>\0</pre>");
        check_split(&"\0".repeat(300), 100);
        check_fallback(&"\0".repeat(300), 100);
    }

    #[test]
    fn crlf_is_never_split_in_the_fallback() {
        let md = "word word\r\n".repeat(100) + "\r\n" + &"para\r\n".repeat(50);
        for part in check_fallback(&md, 64) {
            assert!(!part.ends_with('\r'), "{part:?}");
        }
        for part in check_split(&md, 64) {
            assert!(!part.plain.contains('\r'));
        }
        let hard = "\r\n".repeat(100);
        for part in check_fallback(&hard, 7) {
            assert!(part.starts_with('\r') && part.ends_with('\n'));
        }
    }

    #[test]
    fn bold_and_inline_code_are_reopened_across_cuts() {
        let md = format!("**{}** `{}`", "b".repeat(30), "c".repeat(30));
        let parts = check_split(&md, 20);
        assert!(parts.iter().filter(|p| p.html.starts_with("<b>")).count() >= 2);
        assert!(parts.iter().filter(|p| p.html.contains("<code>")).count() >= 2);
    }

    // -- overflow -----------------------------------------------------------

    #[test]
    fn answers_within_max_parts_have_no_document() {
        let md = "word ".repeat(300);
        let rendered = render_answer(&md, 500, 4);
        assert_eq!(rendered.parts.len(), 3);
        assert!(rendered.overflow_document.is_none());
    }

    #[test]
    fn overflow_attaches_the_whole_answer() {
        let md = long_answer() + &long_answer();
        let rendered = render_answer(&md, TELEGRAM_MESSAGE_LIMIT, DEFAULT_MAX_PARTS);
        assert_eq!(rendered.parts.len(), DEFAULT_MAX_PARTS);
        let all = split_for_telegram(&md, TELEGRAM_MESSAGE_LIMIT);
        assert_eq!(rendered.parts[..3], all[..3]);
        let note = rendered.parts.last().unwrap();
        assert!(note.plain.contains(OVERFLOW_FILE_NAME));
        assert_well_formed(&note.html);
        assert_eq!(
            rendered.overflow_document,
            Some((OVERFLOW_FILE_NAME.to_string(), md.clone()))
        );
        // max_parts 0 behaves as 1: only the note.
        let rendered = render_answer(&md, TELEGRAM_MESSAGE_LIMIT, 0);
        assert_eq!(rendered.parts.len(), 1);
        assert!(rendered.overflow_document.is_some());
        // The note names the file even with a small limit.
        let rendered = render_answer(&md, 60, 2);
        assert!(rendered.parts[1].plain.contains(OVERFLOW_FILE_NAME));
        // Even a tiny limit gives a note that fits.
        let rendered = render_answer(&md, 10, 2);
        assert!(rendered.parts.iter().all(|p| p.telegram_len() <= 10));
    }

    #[test]
    fn blank_parts_are_not_sent() {
        let md = format!("{}hello", " ".repeat(300));
        assert!(split_for_telegram(&md, 100).iter().any(Part::is_blank));
        let rendered = render_answer(&md, 100, 4);
        assert_eq!(rendered.parts.len(), 1);
        assert!(rendered.parts[0].plain.ends_with("hello"));
        assert!(render_answer("  \n\n ", 100, 4).is_empty());
    }

    // -- properties ---------------------------------------------------------

    const PIECES: &[&str] = &[
        "```",
        "```rust\n",
        "\n```\n",
        "`",
        "``",
        "**",
        "*",
        "\n",
        "\n\n",
        "\r\n",
        " ",
        "   ",
        "<",
        ">",
        "&",
        "\"",
        "&amp;",
        "&#x41;",
        "👨‍👩‍👧‍👦",
        "🇫🇷🇩🇪",
        "👍🏽",
        "e\u{301}",
        "שָׁלוֹם",
        "مرحبا",
        "\0",
        "\t",
        "\u{200D}",
        "\u{FE0F}",
    ];

    fn markdownish() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            4 => "[a-z]{1,12}",
            4 => prop::sample::select(PIECES).prop_map(String::from),
            1 => any::<String>(),
        ];
        prop::collection::vec(atom, 0..80).prop_map(|atoms| atoms.concat())
    }

    /// Devanagari, Thai and Hangul: whole words, single code points of those
    /// blocks in any order (marks after marks, a vowel sign first), spaces and
    /// line breaks.
    fn clustered_atom() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(CLUSTERED_WORDS).prop_map(String::from),
            3 => "[\u{0900}-\u{097F}\u{0E00}-\u{0E7F}\u{1100}-\u{11FF}\u{AC00}-\u{D7A3}]{1,6}",
            2 => prop::sample::select(&[" ", "\n", "\n\n", "  "][..]).prop_map(String::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn split_holds_all_invariants(md in markdownish(), limit in 2usize..200) {
            check_split(&md, limit);
        }

        #[test]
        fn split_handles_arbitrary_unicode(md in any::<String>(), limit in 0usize..60) {
            check_split(&md, limit);
            check_fallback(&md, limit);
        }

        #[test]
        fn clustered_scripts_are_cut_between_clusters(
            words in prop::collection::vec(clustered_atom(), 0..120),
            limit in 2usize..80,
        ) {
            let text = words.concat();
            let plain: Vec<String> = check_split(&text, limit).into_iter().map(|p| p.plain).collect();
            assert_cuts_on_graphemes(&markdown_to_plain(&text), &plain, limit);
            assert_cuts_on_graphemes(&text, &check_fallback(&text, limit), limit);
        }

        #[test]
        fn fallback_reassembles_exactly(md in markdownish(), limit in 2usize..200) {
            check_fallback(&md, limit);
        }

        #[test]
        fn whole_conversion_is_well_formed(md in markdownish()) {
            let html = markdown_to_telegram_html(&md);
            assert_well_formed(&html);
            prop_assert_eq!(strip_html_to_plain(&html), markdown_to_plain(&md));
        }

        #[test]
        fn escape_roundtrips(text in any::<String>()) {
            prop_assert_eq!(strip_html_to_plain(&escape_html(&text)), text);
        }

        #[test]
        fn render_answer_respects_limits(
            md in markdownish(),
            limit in 50usize..200,
            max_parts in 0usize..5,
        ) {
            let rendered = render_answer(&md, limit, max_parts);
            prop_assert!(rendered.parts.len() <= max_parts.max(1));
            for part in &rendered.parts {
                prop_assert!(!part.is_blank());
                prop_assert!(part.telegram_len() <= limit);
                assert_well_formed(&part.html);
            }
            if rendered.overflow_document.is_none() {
                let sent: String = rendered.parts.iter().map(|p| p.plain.as_str()).collect();
                // Only whitespace-only parts may have been dropped.
                let visible = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
                prop_assert_eq!(visible(&sent), visible(&markdown_to_plain(&md)));
            }
        }
    }
}
