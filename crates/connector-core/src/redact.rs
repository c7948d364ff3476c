//! Removing resolved secret values from text that leaves the process.

use crate::Secret;

/// What replaces a secret, or a piece of one, in redacted text.
pub const REDACTED: &str = "[redacted]";

/// Pieces of a secret shorter than this are left alone (unless the secret itself is
/// shorter), so ordinary words are not mangled by a chance match; a target that
/// reflects a token and an error that quotes the first characters of a line cut the
/// token at any length, so anything from here up is redacted.
const MIN_PIECE: usize = 4;

/// Replaces every occurrence of a secret in `text`, and every piece of one at least
/// four bytes long (an excerpt may cut a token), by [`REDACTED`].
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    let secrets: Vec<&[u8]> = secrets
        .iter()
        .map(|s| s.expose().as_bytes())
        .filter(|s| !s.is_empty())
        .collect();
    if secrets.is_empty() {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let longest = secrets
            .iter()
            .map(|secret| {
                let piece = longest_piece_at(&bytes[i..], secret);
                (piece, piece >= MIN_PIECE.min(secret.len()))
            })
            .filter(|(_, counts)| *counts)
            .map(|(piece, _)| piece)
            .max()
            .unwrap_or(0);
        if longest == 0 {
            i += 1;
            continue;
        }
        // Widen to character boundaries, so the text stays valid UTF-8.
        let start = (0..=i)
            .rev()
            .find(|&s| text.is_char_boundary(s))
            .unwrap_or(0);
        let mut end = i + longest;
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push_str(&text[copied..start.max(copied)]);
        out.push_str(REDACTED);
        copied = end;
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// The length of the longest prefix of `text` that occurs somewhere in `secret`.
fn longest_piece_at(text: &[u8], secret: &[u8]) -> usize {
    let mut best = 0;
    for offset in 0..secret.len() {
        let len = text
            .iter()
            .zip(&secret[offset..])
            .take_while(|(a, b)| a == b)
            .count();
        best = best.max(len);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(values: &[&str]) -> Vec<Secret> {
        values.iter().map(|v| Secret::new(*v)).collect()
    }

    #[test]
    fn whole_secrets_and_cut_pieces_are_replaced() {
        let s = secrets(&["s3cr3t-token-value"]);
        assert_eq!(
            redact("got Bearer s3cr3t-token-value back", &s),
            "got Bearer [redacted] back"
        );
        assert_eq!(
            redact("line 1: unexpected `Bearer s3cr3t-to…`", &s),
            "line 1: unexpected `Bearer [redacted]…`"
        );
        assert_eq!(redact("…token-value", &s), "…[redacted]");
    }

    #[test]
    fn text_without_secrets_is_unchanged() {
        let s = secrets(&["s3cr3t-token-value"]);
        for text in ["connection refused", "s3c is short", "", "ünïcödé ok"] {
            assert_eq!(redact(text, &s), text);
        }
        assert_eq!(redact("anything", &[]), "anything");
    }

    #[test]
    fn multibyte_text_stays_valid() {
        let s = secrets(&["pässwörd-1234"]);
        assert_eq!(redact("x pässwörd-1234 y", &s), "x [redacted] y");
        assert_eq!(redact("é wörd-12 é", &s), "é [redacted] é");
    }

    #[test]
    fn short_secrets_are_redacted_whole() {
        let s = secrets(&["abc"]);
        assert_eq!(redact("xabcx ab", &s), "x[redacted]x ab");
    }
}
