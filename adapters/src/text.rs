//! Free text that people type (a stop's town and venue, an order's personalisation, a stop
//! named in a survey answer) and that other people then read on a screen, in OPC UA and in
//! Grafana: it must show something. One check for every such field, so they all refuse the
//! same things:
//!
//! - control characters (C0, DEL, C1), anywhere;
//! - bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C), anywhere:
//!   they reorder what follows them on screen, which is how a name is disguised;
//! - text that is blank once whitespace and invisible characters (zero-width spaces and
//!   joiners, the BOM, the soft hyphen, fillers) are ignored;
//! - text whose first visible character is a combining mark, which has no letter to sit on
//!   (a lone U+0301).
//!
//! Invisible characters between visible ones stay allowed: a zero-width joiner inside an emoji
//! sequence is how some emoji are written.

/// Why a text was refused; the message completes "`<field>` ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextIssue {
    #[error("is blank (only spaces or invisible characters)")]
    Blank,
    #[error("contains a control character (U+{0:04X})")]
    Control(u32),
    #[error("contains a bidirectional control character (U+{0:04X})")]
    Bidi(u32),
    #[error("starts with a combining mark (U+{0:04X}) that has no letter to go on")]
    LoneMark(u32),
}

/// Checks a free-text field; see the module's documentation for what is refused.
pub fn check_visible(text: &str) -> Result<(), TextIssue> {
    let mut first_visible = None;
    for c in text.chars() {
        if c.is_control() {
            return Err(TextIssue::Control(c.into()));
        }
        if is_bidi_control(c) {
            return Err(TextIssue::Bidi(c.into()));
        }
        if first_visible.is_none() && !c.is_whitespace() && !is_invisible(c) {
            first_visible = Some(c);
        }
    }
    match first_visible {
        None => Err(TextIssue::Blank),
        Some(c) if is_combining_mark(c) => Err(TextIssue::LoneMark(c.into())),
        Some(_) => Ok(()),
    }
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Characters that draw nothing: format characters (general category Cf) and the blank
/// fillers some fonts render as nothing.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' // soft hyphen
            | '\u{034F}' // combining grapheme joiner
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
            | '\u{17B4}' | '\u{17B5}' // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}' // Mongolian variation selectors, vowel separator
            | '\u{200B}'..='\u{200D}' // zero-width space, non-joiner, joiner
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{206A}'..='\u{206F}' // deprecated format characters
            | '\u{2800}' // braille blank
            | '\u{FE00}'..='\u{FE0F}' // variation selectors
            | '\u{FEFF}' // BOM, zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
            | '\u{1D173}'..='\u{1D17A}' // musical format characters
            | '\u{E0000}'..='\u{E007F}' // tags
            | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

/// The combining-mark blocks (general category M in practice for Latin, Greek, Cyrillic and
/// symbols); enough to refuse a mark that comes first.
fn is_combining_mark(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036F}'
            | '\u{0483}'..='\u{0489}'
            | '\u{0591}'..='\u{05BD}'
            | '\u{0610}'..='\u{061A}'
            | '\u{064B}'..='\u{065F}'
            | '\u{0E31}' | '\u{0E34}'..='\u{0E3A}' | '\u{0E47}'..='\u{0E4E}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{302A}'..='\u{302F}'
            | '\u{3099}' | '\u{309A}'
            | '\u{FE20}'..='\u{FE2F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_passes() {
        for ok in [
            "Lens",
            "Lycée Condorcet",
            "  Zoé ",
            "e\u{301}",
            "👩\u{200D}🔧",
            "日本",
        ] {
            assert_eq!(check_visible(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn invisible_blank_and_disguised_text_is_refused() {
        assert_eq!(check_visible(""), Err(TextIssue::Blank));
        assert_eq!(check_visible("   "), Err(TextIssue::Blank));
        assert_eq!(check_visible("\u{FEFF}"), Err(TextIssue::Blank));
        assert_eq!(
            check_visible("\u{200B}\u{200D} \u{2060}"),
            Err(TextIssue::Blank)
        );
        assert_eq!(check_visible("\u{3164}"), Err(TextIssue::Blank));
        assert_eq!(check_visible("\u{202E}"), Err(TextIssue::Bidi(0x202E)));
        assert_eq!(check_visible("Lens\u{2067}x"), Err(TextIssue::Bidi(0x2067)));
        assert_eq!(check_visible("a\u{7}"), Err(TextIssue::Control(7)));
        assert_eq!(check_visible("a\u{85}"), Err(TextIssue::Control(0x85)));
        assert_eq!(check_visible("\u{301}"), Err(TextIssue::LoneMark(0x301)));
        assert_eq!(
            check_visible("\u{200B}\u{301}a"),
            Err(TextIssue::LoneMark(0x301))
        );
    }
}
