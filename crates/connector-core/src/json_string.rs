//! JSON string literals, written straight into a batch's text: the labels of every
//! metric row go through here, so the scan for characters to escape is the hot part.

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// True when some byte of `w` is one JSON must escape. Exact for "some byte": the
/// borrows can only mark bytes above one that really matches.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let quote = has_zero(w ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
    control | quote | backslash != 0
}

/// True when no byte of `s` needs a JSON escape. The bytes after the last whole
/// word are tested as one word too, read in registers: label names and values are
/// mostly shorter than 16 bytes, and a byte loop over the tail was most of the scan.
#[inline]
fn is_plain(s: &str) -> bool {
    let b = s.as_bytes();
    let mut chunks = b.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if word_needs_escape(u64::from_le_bytes(word)) {
            return false;
        }
    }
    if chunks.remainder().is_empty() {
        return true;
    }
    !word_needs_escape(tail_word(b))
}

/// The last bytes of `b` that do not fill a word, as one word padded with spaces
/// (a byte that needs no escape), or the last eight bytes again when `b` is longer.
/// Built from loads, not by copying the tail into a padded array: that copy, read
/// back whole at once, stalled on store forwarding at half of `push_json_entry`'s
/// time (`perf annotate` on the `ingest` bench's `http_to_batch`).
#[inline]
fn tail_word(b: &[u8]) -> u64 {
    const SPACES: u64 = ONES * 0x20;
    if let Some(last) = b.last_chunk::<8>() {
        return u64::from_le_bytes(*last);
    }
    let n = b.len();
    if n >= 4 {
        // Two overlapping halves: bytes read twice are tested twice.
        let low = b.first_chunk::<4>().map_or(0, |w| u32::from_le_bytes(*w));
        let high = b.last_chunk::<4>().map_or(0, |w| u32::from_le_bytes(*w));
        u64::from(low) | (u64::from(high) << 32)
    } else {
        // One to three bytes: the first, the middle and the last, above spaces.
        let byte = |i: usize| u64::from(b.get(i).copied().unwrap_or(b' '));
        byte(0) | (byte(n / 2) << 8) | (byte(n.saturating_sub(1)) << 16) | (SPACES << 24)
    }
}

/// Appends `"key":"value"`, escaping as JSON needs. Nearly every label needs no
/// escape: then the entry is one reservation and four copies, with no search for
/// where an escape falls.
#[inline]
pub(crate) fn push_json_entry(out: &mut String, key: &str, value: &str) {
    if is_plain(key) && is_plain(value) {
        out.reserve(key.len() + value.len() + 5);
        out.push('"');
        out.push_str(key);
        out.push_str("\":\"");
        out.push_str(value);
        out.push('"');
    } else {
        push_json_string(out, key);
        out.push(':');
        push_json_string(out, value);
    }
}

/// Where the first byte JSON must escape is (a control character, `"` or `\`),
/// looked for eight bytes at a time: label names and values rarely hold one, and a
/// scan a byte at a time was a third of building a label-heavy batch (`perf` on the
/// `ingest` bench's `parse_to_batch`).
fn first_escape(bytes: &[u8]) -> Option<usize> {
    // A word that matches is scanned again byte by byte.
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if word_needs_escape(u64::from_le_bytes(word)) {
            return chunk.iter().position(|&b| needs_escape(b)).map(|i| at + i);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| needs_escape(b))
        .map(|i| at + i)
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    // Most label names and values need no escape: copy runs between escapes whole.
    while let Some(offset) = first_escape(&bytes[clean_from..]) {
        let at = clean_from + offset;
        out.push_str(&s[clean_from..at]);
        match bytes[at] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b => out.push_str(&format!("\\u{b:04x}")),
        }
        clean_from = at + 1;
    }
    out.push_str(&s[clean_from..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_is_plain_exactly_when_no_byte_needs_an_escape() {
        let plain = |s: &str| !s.bytes().any(needs_escape);
        for len in 0..24 {
            for at in 0..len {
                for special in [0u8, 0x1f, b'"', b'\\', b' ', b'~', 0x7f, b'a'] {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = special;
                    let text = String::from_utf8(bytes).unwrap();
                    assert_eq!(is_plain(&text), plain(&text), "{text:?}");
                }
            }
        }
        assert!(is_plain(""));
    }

    #[test]
    fn json_strings_and_entries_match_serde_json_wherever_the_escape_falls() {
        let specials = [
            "\u{0}", "\u{1f}", "\"", "\\", "\n", "\u{7f}", "é", "\u{20}", "😀",
        ];
        for len in 0..20 {
            for at in 0..=len {
                for special in specials {
                    let text: String = "a".repeat(at) + special + &"b".repeat(len - at);
                    let mut out = String::new();
                    push_json_string(&mut out, &text);
                    let quoted = serde_json::to_string(&text).unwrap();
                    assert_eq!(out, quoted, "{text:?}");
                    for (key, value) in [(&text[..], "v"), ("k", &text[..])] {
                        let mut entry = String::new();
                        push_json_entry(&mut entry, key, value);
                        let expected = format!(
                            "{}:{}",
                            serde_json::to_string(key).unwrap(),
                            serde_json::to_string(value).unwrap()
                        );
                        assert_eq!(entry, expected, "{key:?}: {value:?}");
                    }
                }
            }
        }
        let every_byte: String = (0u8..128).map(char::from).collect();
        let mut out = String::new();
        push_json_string(&mut out, &every_byte);
        assert_eq!(
            serde_json::from_str::<String>(&out).unwrap(),
            every_byte,
            "{out}"
        );
    }
}
