//! Telegram's `parse_mode = "HTML"` formatting, re-implemented as a strict
//! validator and entity extractor.
//!
//! The Bot API accepts only a small set of tags (`b`, `strong`, `i`, `em`,
//! `u`, `ins`, `s`, `strike`, `del`, `span class="tg-spoiler"`,
//! `tg-spoiler`, `a href`, `code`, `pre` (optionally wrapping
//! `<code class="language-x">`), `blockquote [expandable]` and
//! `tg-emoji emoji-id`) and only the named entities `&lt;`, `&gt;`, `&amp;`,
//! `&quot;` plus numeric character references. Anything else is rejected with
//! a `can't parse entities` error, exactly like the real server does, so a bot
//! that forgets to escape `<` in HTML mode fails against the simulator too.
//!
//! Offsets and lengths of the produced entities are counted in UTF-16 code
//! units, as in the Bot API.

use serde_json::{Value, json};

/// Maximum length of a message text, in UTF-16 code units after parsing.
pub const MAX_MESSAGE_UTF16: usize = 4096;

/// Maximum length of a media caption, in UTF-16 code units after parsing.
pub const MAX_CAPTION_UTF16: usize = 1024;

/// Tags accepted by the Bot API in HTML mode.
const SUPPORTED_TAGS: &[&str] = &[
    "a",
    "b",
    "strong",
    "i",
    "em",
    "s",
    "strike",
    "del",
    "u",
    "ins",
    "tg-spoiler",
    "tg-emoji",
    "span",
    "pre",
    "code",
    "blockquote",
];

/// Numeric character references longer than this are not decoded.
const MAX_NUMERIC_REFERENCE_LEN: usize = 10;

/// Why an HTML-formatted text was rejected. The `Display` text is what follows
/// `"Bad Request: can't parse entities: "` in the API error description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtmlError {
    /// A `<` starts a tag that never ends with `>`.
    #[error("Unclosed start tag at byte offset {0}")]
    UnclosedStartTag(usize),
    /// The tag name is not one of the supported tags (also for a bare `<`).
    #[error("Unsupported start tag \"{tag}\" at byte offset {offset}")]
    UnsupportedStartTag {
        /// Lower-cased tag name as written.
        tag: String,
        /// Byte offset of the `<` in the input.
        offset: usize,
    },
    /// An attribute without a name, e.g. `<a ="x">`.
    #[error("Empty attribute name in the tag \"{tag}\" at byte offset {offset}")]
    EmptyAttributeName {
        /// Tag being parsed.
        tag: String,
        /// Byte offset of the `<` in the input.
        offset: usize,
    },
    /// An attribute without `=value`.
    #[error(
        "Expected equal sign in declaration of an attribute of the tag \"{tag}\" at byte offset {offset}"
    )]
    ExpectedEqualSign {
        /// Tag being parsed.
        tag: String,
        /// Byte offset of the `<` in the input.
        offset: usize,
    },
    /// An unquoted attribute value containing forbidden characters.
    #[error("Unexpected end of name token at byte offset {0}")]
    UnexpectedEndOfNameToken(usize),
    /// `<span>` without `class="tg-spoiler"`.
    #[error("Tag \"span\" must have class \"tg-spoiler\" at byte offset {0}")]
    SpanWithoutSpoilerClass(usize),
    /// A closing tag while no tag is open.
    #[error("Unexpected end tag at byte offset {0}")]
    UnexpectedEndTag(usize),
    /// A `</` that never ends with `>`.
    #[error("Unclosed end tag at byte offset {0}")]
    UnclosedEndTag(usize),
    /// A closing tag that does not match the innermost open tag.
    #[error(
        "Unmatched end tag at byte offset {offset}, expected \"</{expected}>\", found \"</{found}>\""
    )]
    UnmatchedEndTag {
        /// Byte offset of the `</` in the input.
        offset: usize,
        /// Name of the innermost open tag.
        expected: String,
        /// Name found in the closing tag.
        found: String,
    },
    /// The text ended while a tag was still open.
    #[error("Can't find end tag corresponding to start tag \"{0}\"")]
    MissingEndTag(String),
}

/// Kind of a formatting entity produced by the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityKind {
    /// `<b>`, `<strong>`.
    Bold,
    /// `<i>`, `<em>`.
    Italic,
    /// `<u>`, `<ins>`.
    Underline,
    /// `<s>`, `<strike>`, `<del>`.
    Strikethrough,
    /// `<tg-spoiler>`, `<span class="tg-spoiler">`.
    Spoiler,
    /// `<code>`.
    Code,
    /// `<pre>`, optionally with the language of an inner `<code class="language-x">`.
    Pre {
        /// Programming language, if given.
        language: Option<String>,
    },
    /// `<a href="...">` with a URL the API accepts.
    TextLink {
        /// Normalised absolute URL.
        url: String,
    },
    /// `<blockquote>`.
    Blockquote,
    /// `<blockquote expandable>`.
    ExpandableBlockquote,
    /// `<tg-emoji emoji-id="...">`.
    CustomEmoji {
        /// Custom emoji identifier.
        id: String,
    },
}

/// A formatting entity; `offset` and `length` are in UTF-16 code units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// What the entity does.
    pub kind: EntityKind,
    /// Start, in UTF-16 code units of the parsed text.
    pub offset: usize,
    /// Length, in UTF-16 code units.
    pub length: usize,
}

impl Entity {
    /// The Bot API `MessageEntity` JSON object for this entity.
    pub fn to_json(&self) -> Value {
        let mut obj = json!({ "offset": self.offset, "length": self.length });
        let (kind, extra) = match &self.kind {
            EntityKind::Bold => ("bold", None),
            EntityKind::Italic => ("italic", None),
            EntityKind::Underline => ("underline", None),
            EntityKind::Strikethrough => ("strikethrough", None),
            EntityKind::Spoiler => ("spoiler", None),
            EntityKind::Code => ("code", None),
            EntityKind::Pre { language } => ("pre", language.as_ref().map(|l| ("language", l))),
            EntityKind::TextLink { url } => ("text_link", Some(("url", url))),
            EntityKind::Blockquote => ("blockquote", None),
            EntityKind::ExpandableBlockquote => ("expandable_blockquote", None),
            EntityKind::CustomEmoji { id } => ("custom_emoji", Some(("custom_emoji_id", id))),
        };
        obj["type"] = json!(kind);
        if let Some((key, value)) = extra {
            obj[key] = json!(value);
        }
        obj
    }
}

/// Result of parsing a formatted text: the plain text a user would see and
/// the entities describing its formatting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Formatted {
    /// Text with tags removed and character references decoded.
    pub text: String,
    /// Entities sorted by offset (outer entities first).
    pub entities: Vec<Entity>,
}

impl Formatted {
    /// A text without any formatting.
    pub fn plain(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            entities: Vec::new(),
        }
    }

    /// Length of the visible text in UTF-16 code units.
    pub fn utf16_len(&self) -> usize {
        utf16_len(&self.text)
    }

    /// Entities as a JSON array of Bot API `MessageEntity` objects.
    pub fn entities_json(&self) -> Value {
        Value::Array(self.entities.iter().map(Entity::to_json).collect())
    }
}

/// Number of UTF-16 code units needed to encode `s` (the Bot API's length unit).
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Parses a Telegram HTML-formatted text.
///
/// Returns the visible text and its entities, or the reason the Bot API
/// would reject it.
pub fn parse_html(input: &str) -> Result<Formatted, HtmlError> {
    let mut parser = Parser::new(input);
    parser.run()?;
    Ok(parser.finish())
}

/// A tag that has been opened and not yet closed.
#[derive(Debug)]
struct OpenTag {
    name: String,
    argument: Option<String>,
    expandable: bool,
    start: usize,
}

/// The attributes of a start tag that matter to the Bot API.
#[derive(Debug, Default)]
struct TagAttributes {
    argument: Option<String>,
    expandable: bool,
}

struct Parser<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
    out: String,
    out_utf16: usize,
    stack: Vec<OpenTag>,
    entities: Vec<Entity>,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            input,
            bytes: input.as_bytes(),
            pos: 0,
            out: String::with_capacity(input.len()),
            out_utf16: 0,
            stack: Vec::new(),
            entities: Vec::new(),
        }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.bytes.get(at).copied()
    }

    fn is_space_at(&self, at: usize) -> bool {
        self.byte(at).is_some_and(|b| b.is_ascii_whitespace())
    }

    fn push_str(&mut self, s: &str) {
        self.out.push_str(s);
        self.out_utf16 += utf16_len(s);
    }

    fn push_char(&mut self, c: char) {
        self.out.push(c);
        self.out_utf16 += c.len_utf16();
    }

    fn run(&mut self) -> Result<(), HtmlError> {
        while self.pos < self.bytes.len() {
            match self.bytes[self.pos] {
                b'&' => self.character_reference(),
                b'<' if self.byte(self.pos + 1) == Some(b'/') => self.end_tag()?,
                b'<' => self.start_tag()?,
                _ => self.plain_run(),
            }
        }
        match self.stack.last() {
            Some(open) => Err(HtmlError::MissingEndTag(open.name.clone())),
            None => Ok(()),
        }
    }

    fn finish(mut self) -> Formatted {
        self.entities
            .sort_by(|a, b| a.offset.cmp(&b.offset).then(b.length.cmp(&a.length)));
        Formatted {
            text: self.out,
            entities: self.entities,
        }
    }

    /// Copies text up to the next `<` or `&` (both ASCII, so slicing is safe).
    fn plain_run(&mut self) {
        let rest = &self.input[self.pos..];
        let len = rest.find(['<', '&']).unwrap_or(rest.len());
        self.push_str(&rest[..len]);
        self.pos += len;
    }

    fn character_reference(&mut self) {
        match decode_reference(self.bytes, self.pos) {
            Some((c, end)) => {
                self.push_char(c);
                self.pos = end;
            }
            None => {
                self.push_char('&');
                self.pos += 1;
            }
        }
    }

    fn skip_spaces(&mut self) {
        while self.is_space_at(self.pos) {
            self.pos += 1;
        }
    }

    fn start_tag(&mut self) -> Result<(), HtmlError> {
        let begin = self.pos;
        self.pos += 1;
        let name_start = self.pos;
        while self
            .byte(self.pos)
            .is_some_and(|b| !b.is_ascii_whitespace() && b != b'>')
        {
            self.pos += 1;
        }
        if self.pos >= self.bytes.len() {
            return Err(HtmlError::UnclosedStartTag(begin));
        }
        let name = self.input[name_start..self.pos].to_ascii_lowercase();
        if !SUPPORTED_TAGS.contains(&name.as_str()) {
            return Err(HtmlError::UnsupportedStartTag {
                tag: name,
                offset: begin,
            });
        }
        let attributes = self.attributes(&name, begin)?;
        self.pos += 1; // the '>'
        if name == "span" && attributes.argument.as_deref() != Some("spoiler") {
            return Err(HtmlError::SpanWithoutSpoilerClass(begin));
        }
        self.stack.push(OpenTag {
            name,
            argument: attributes.argument,
            expandable: attributes.expandable,
            start: self.out_utf16,
        });
        Ok(())
    }

    /// Parses attributes up to (not including) the closing `>`.
    fn attributes(&mut self, tag: &str, begin: usize) -> Result<TagAttributes, HtmlError> {
        let mut attrs = TagAttributes::default();
        loop {
            self.skip_spaces();
            match self.byte(self.pos) {
                None => return Err(HtmlError::UnclosedStartTag(begin)),
                Some(b'>') => return Ok(attrs),
                Some(_) => {}
            }
            let name_start = self.pos;
            while self
                .byte(self.pos)
                .is_some_and(|b| !b.is_ascii_whitespace() && b != b'=' && b != b'>')
            {
                self.pos += 1;
            }
            let attr_name = self.input[name_start..self.pos].to_ascii_lowercase();
            if attr_name.is_empty() {
                return Err(HtmlError::EmptyAttributeName {
                    tag: tag.to_owned(),
                    offset: begin,
                });
            }
            self.skip_spaces();
            if self.byte(self.pos) != Some(b'=') {
                if tag == "blockquote" && attr_name == "expandable" {
                    attrs.expandable = true;
                    continue;
                }
                return Err(HtmlError::ExpectedEqualSign {
                    tag: tag.to_owned(),
                    offset: begin,
                });
            }
            self.pos += 1;
            self.skip_spaces();
            let value = self.attribute_value(begin)?;
            apply_attribute(tag, &attr_name, value, &mut attrs);
        }
    }

    fn attribute_value(&mut self, begin: usize) -> Result<String, HtmlError> {
        match self.byte(self.pos) {
            None => Err(HtmlError::UnclosedStartTag(begin)),
            Some(quote @ (b'"' | b'\'')) => Ok(self.quoted_value(quote, begin)?),
            Some(_) => self.name_token(),
        }
    }

    fn quoted_value(&mut self, quote: u8, begin: usize) -> Result<String, HtmlError> {
        self.pos += 1;
        let mut value = String::new();
        loop {
            match self.byte(self.pos) {
                None => return Err(HtmlError::UnclosedStartTag(begin)),
                Some(b) if b == quote => {
                    self.pos += 1;
                    return Ok(value);
                }
                Some(b'&') => match decode_reference(self.bytes, self.pos) {
                    Some((c, end)) => {
                        value.push(c);
                        self.pos = end;
                    }
                    None => {
                        value.push('&');
                        self.pos += 1;
                    }
                },
                Some(_) => {
                    let rest = &self.input[self.pos..];
                    let stop = rest
                        .find(|c: char| c == '&' || c as u32 == u32::from(quote))
                        .unwrap_or(rest.len());
                    value.push_str(&rest[..stop]);
                    self.pos += stop;
                }
            }
        }
    }

    /// An unquoted value: letters, digits, `.` and `-` only (lower-cased).
    fn name_token(&mut self) -> Result<String, HtmlError> {
        let start = self.pos;
        while self
            .byte(self.pos)
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            self.pos += 1;
        }
        let ends_ok = self
            .byte(self.pos)
            .is_none_or(|b| b.is_ascii_whitespace() || b == b'>');
        if !ends_ok {
            return Err(HtmlError::UnexpectedEndOfNameToken(start));
        }
        Ok(self.input[start..self.pos].to_ascii_lowercase())
    }

    fn end_tag(&mut self) -> Result<(), HtmlError> {
        let begin = self.pos;
        self.pos += 2;
        if self.stack.is_empty() {
            return Err(HtmlError::UnexpectedEndTag(begin));
        }
        let name_start = self.pos;
        while self
            .byte(self.pos)
            .is_some_and(|b| !b.is_ascii_whitespace() && b != b'>')
        {
            self.pos += 1;
        }
        let found = self.input[name_start..self.pos].to_ascii_lowercase();
        self.skip_spaces();
        if self.byte(self.pos) != Some(b'>') {
            return Err(HtmlError::UnclosedEndTag(begin));
        }
        self.pos += 1;
        let Some(open) = self.stack.pop() else {
            return Err(HtmlError::UnexpectedEndTag(begin));
        };
        if !found.is_empty() && found != open.name {
            return Err(HtmlError::UnmatchedEndTag {
                offset: begin,
                expected: open.name,
                found,
            });
        }
        self.close(open);
        Ok(())
    }

    /// Turns a closed tag into an entity (empty ranges produce none).
    fn close(&mut self, open: OpenTag) {
        let length = self.out_utf16 - open.start;
        if open.name == "code"
            && open.argument.is_some()
            && let Some(parent) = self.stack.last_mut().filter(|p| p.name == "pre")
        {
            parent.argument = open.argument;
            return;
        }
        if length == 0 {
            return;
        }
        if let Some(kind) = entity_kind(&open) {
            self.entities.push(Entity {
                kind,
                offset: open.start,
                length,
            });
        }
    }
}

/// Records the attributes that carry meaning for `tag`; others are ignored.
fn apply_attribute(tag: &str, name: &str, value: String, attrs: &mut TagAttributes) {
    match (tag, name) {
        ("a", "href") | ("tg-emoji", "emoji-id") => attrs.argument = Some(value),
        ("code", "class") => {
            if let Some(lang) = value.strip_prefix("language-") {
                attrs.argument = Some(lang.to_owned());
            }
        }
        ("span", "class") => {
            if let Some(class) = value.strip_prefix("tg-") {
                attrs.argument = Some(class.to_owned());
            }
        }
        _ => {}
    }
}

fn entity_kind(open: &OpenTag) -> Option<EntityKind> {
    let kind = match open.name.as_str() {
        "b" | "strong" => EntityKind::Bold,
        "i" | "em" => EntityKind::Italic,
        "u" | "ins" => EntityKind::Underline,
        "s" | "strike" | "del" => EntityKind::Strikethrough,
        "tg-spoiler" | "span" => EntityKind::Spoiler,
        "code" => EntityKind::Code,
        "pre" => EntityKind::Pre {
            language: open.argument.clone().filter(|l| !l.is_empty()),
        },
        "blockquote" if open.expandable => EntityKind::ExpandableBlockquote,
        "blockquote" => EntityKind::Blockquote,
        "a" => EntityKind::TextLink {
            url: normalize_url(open.argument.as_deref()?)?,
        },
        "tg-emoji" => EntityKind::CustomEmoji {
            id: open
                .argument
                .clone()
                .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))?,
        },
        _ => return None,
    };
    Some(kind)
}

/// Returns the absolute URL the API would link to, or `None` when the API
/// would silently drop the link (it never rejects the message for a bad URL).
pub fn normalize_url(href: &str) -> Option<String> {
    let href = href.trim();
    let (scheme, rest) = match href.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_owned(), href),
    };
    if !matches!(scheme.as_str(), "http" | "https" | "tg") {
        return None;
    }
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(host_end);
    let host_ok = !host.is_empty()
        && !host.starts_with(['.', '-', ':'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    let tail_ok = tail
        .chars()
        .all(|c| !c.is_whitespace() && !c.is_control() && c != '\\');
    (host_ok && tail_ok).then(|| format!("{scheme}://{rest}"))
}

/// Decodes the character reference starting with `&` at `pos`.
///
/// Returns the character and the position after the reference (a trailing
/// `;` is optional), or `None` when the `&` is to be taken literally.
fn decode_reference(bytes: &[u8], pos: usize) -> Option<(char, usize)> {
    let mut end = pos + 1;
    let value = if bytes.get(end) == Some(&b'#') {
        end += 1;
        let radix = if matches!(bytes.get(end), Some(b'x' | b'X')) {
            end += 1;
            16
        } else {
            10
        };
        let digits_start = end;
        while bytes
            .get(end)
            .is_some_and(|b| char::from(*b).is_digit(radix))
        {
            end += 1;
        }
        if end == digits_start || end - pos >= MAX_NUMERIC_REFERENCE_LEN {
            return None;
        }
        let digits = std::str::from_utf8(&bytes[digits_start..end]).ok()?;
        let code = u32::from_str_radix(digits, radix).ok()?;
        if code == 0 {
            return None;
        }
        char::from_u32(code)?
    } else {
        while bytes.get(end).is_some_and(u8::is_ascii_alphabetic) {
            end += 1;
        }
        match &bytes[pos + 1..end] {
            b"lt" => '<',
            b"gt" => '>',
            b"amp" => '&',
            b"quot" => '"',
            _ => return None,
        }
    };
    if bytes.get(end) == Some(&b';') {
        end += 1;
    }
    Some((value, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(f: &Formatted) -> Vec<(EntityKind, usize, usize)> {
        f.entities
            .iter()
            .map(|e| (e.kind.clone(), e.offset, e.length))
            .collect()
    }

    #[test]
    fn plain_text_passes_through() {
        let f = parse_html("hello world > 3").unwrap();
        assert_eq!(f.text, "hello world > 3");
        assert!(f.entities.is_empty());
    }

    #[test]
    fn all_supported_tags_are_accepted() {
        let html = "<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins>\
                    <s>s</s><strike>k</strike><del>d</del><tg-spoiler>p</tg-spoiler>\
                    <span class=\"tg-spoiler\">q</span><a href=\"https://example.com/x?y=1\">l</a>\
                    <code>c</code><pre>p</pre><pre><code class=\"language-rust\">fn</code></pre>\
                    <blockquote>q</blockquote><blockquote expandable>x</blockquote>\
                    <tg-emoji emoji-id=\"5368324170671202286\">👍</tg-emoji>";
        let f = parse_html(html).unwrap();
        assert_eq!(f.text, "bsieunskdpqlcpfnqx👍");
        let k = kinds(&f);
        assert_eq!(k[0], (EntityKind::Bold, 0, 1));
        assert!(k.contains(&(EntityKind::Spoiler, 10, 1)));
        assert!(k.contains(&(
            EntityKind::TextLink {
                url: "https://example.com/x?y=1".into()
            },
            11,
            1
        )));
        assert!(k.contains(&(
            EntityKind::Pre {
                language: Some("rust".into())
            },
            14,
            2
        )));
        assert!(k.contains(&(EntityKind::Pre { language: None }, 13, 1)));
        assert!(k.contains(&(EntityKind::ExpandableBlockquote, 17, 1)));
        assert_eq!(
            k.iter()
                .filter(|(kind, _, _)| *kind == EntityKind::Code)
                .count(),
            1
        );
    }

    #[test]
    fn tags_are_case_insensitive_and_nest() {
        let f = parse_html("<B>bold <I>both</I></b>").unwrap();
        assert_eq!(f.text, "bold both");
        assert_eq!(
            kinds(&f),
            vec![(EntityKind::Bold, 0, 9), (EntityKind::Italic, 5, 4)]
        );
    }

    #[test]
    fn entities_are_decoded() {
        let f = parse_html("&lt;a&gt; &amp; &quot;x&quot; &#65;&#x42; &nbsp; &copy &").unwrap();
        assert_eq!(f.text, "<a> & \"x\" AB &nbsp; &copy &");
    }

    #[test]
    fn semicolon_is_optional_and_invalid_numbers_stay_literal() {
        assert_eq!(parse_html("&lt3").unwrap().text, "<3");
        assert_eq!(parse_html("&#0;").unwrap().text, "&#0;");
        assert_eq!(parse_html("&#xD800;").unwrap().text, "&#xD800;");
        assert_eq!(parse_html("&#99999999999;").unwrap().text, "&#99999999999;");
    }

    #[test]
    fn unknown_tag_is_rejected() {
        let err = parse_html("hi <div>x</div>").unwrap_err();
        assert_eq!(
            err,
            HtmlError::UnsupportedStartTag {
                tag: "div".into(),
                offset: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "Unsupported start tag \"div\" at byte offset 3"
        );
    }

    #[test]
    fn bare_less_than_is_rejected() {
        assert!(matches!(
            parse_html("1 < 2").unwrap_err(),
            HtmlError::UnsupportedStartTag { ref tag, offset: 2 } if tag.is_empty()
        ));
        assert_eq!(
            parse_html("x <b").unwrap_err(),
            HtmlError::UnclosedStartTag(2)
        );
    }

    #[test]
    fn unbalanced_tags_are_rejected() {
        assert_eq!(
            parse_html("<b>x").unwrap_err(),
            HtmlError::MissingEndTag("b".into())
        );
        assert_eq!(
            parse_html("x</b>").unwrap_err(),
            HtmlError::UnexpectedEndTag(1)
        );
        assert_eq!(
            parse_html("<b><i>x</b></i>").unwrap_err(),
            HtmlError::UnmatchedEndTag {
                offset: 7,
                expected: "i".into(),
                found: "b".into()
            }
        );
        assert_eq!(
            parse_html("<b>x</b").unwrap_err(),
            HtmlError::UnclosedEndTag(4)
        );
    }

    #[test]
    fn anonymous_end_tag_closes_innermost() {
        let f = parse_html("<b>x</>").unwrap();
        assert_eq!(kinds(&f), vec![(EntityKind::Bold, 0, 1)]);
    }

    #[test]
    fn attribute_errors() {
        assert!(matches!(
            parse_html("<a =\"x\">y</a>").unwrap_err(),
            HtmlError::EmptyAttributeName { .. }
        ));
        assert!(matches!(
            parse_html("<a href>y</a>").unwrap_err(),
            HtmlError::ExpectedEqualSign { .. }
        ));
        assert_eq!(
            parse_html("<a href=x/y>z</a>").unwrap_err(),
            HtmlError::UnexpectedEndOfNameToken(8)
        );
        assert_eq!(
            parse_html("<span>z</span>").unwrap_err(),
            HtmlError::SpanWithoutSpoilerClass(0)
        );
        assert_eq!(
            parse_html("<a href=\"x").unwrap_err(),
            HtmlError::UnclosedStartTag(0)
        );
    }

    #[test]
    fn attribute_values_decode_entities_and_unknown_attributes_are_ignored() {
        let f = parse_html("<a title='t' href='https://e.com/?a=1&amp;b=2'>l</a>").unwrap();
        assert_eq!(
            kinds(&f),
            vec![(
                EntityKind::TextLink {
                    url: "https://e.com/?a=1&b=2".into()
                },
                0,
                1
            )]
        );
    }

    #[test]
    fn invalid_links_are_dropped_not_rejected() {
        let f = parse_html("<a href=\"javascript:alert(1)\">x</a><a>y</a>").unwrap();
        assert_eq!(f.text, "xy");
        assert!(f.entities.is_empty());
        assert_eq!(
            normalize_url("example.com").as_deref(),
            Some("http://example.com")
        );
        assert_eq!(
            normalize_url("tg://user?id=1").as_deref(),
            Some("tg://user?id=1")
        );
        assert_eq!(normalize_url("https://a b"), None);
    }

    #[test]
    fn empty_entities_are_omitted() {
        let f = parse_html("<b></b>x").unwrap();
        assert_eq!(f.text, "x");
        assert!(f.entities.is_empty());
    }

    #[test]
    fn offsets_count_utf16_units() {
        let f = parse_html("😀<b>é</b>").unwrap();
        assert_eq!(kinds(&f), vec![(EntityKind::Bold, 2, 1)]);
        assert_eq!(f.utf16_len(), 3);
        assert_eq!(utf16_len("a😀é"), 4);
    }

    #[test]
    fn entity_json_matches_bot_api() {
        let f = parse_html("<pre><code class=\"language-py\">x</code></pre>").unwrap();
        assert_eq!(
            f.entities_json(),
            json!([{ "type": "pre", "offset": 0, "length": 1, "language": "py" }])
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for input in [
            "<",
            "</",
            "&",
            "&#",
            "&#x",
            "<<>>",
            "<b>\u{0}</b>",
            "<a href='",
            "<a href=",
            "é<é>",
            "<b \u{a0}>x</b>",
            "<blockquote expandable=>x</blockquote>",
        ] {
            let _ = parse_html(input);
        }
    }
}
