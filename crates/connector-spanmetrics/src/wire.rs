//! A zero-copy reader of the protobuf `ExportTraceServiceRequest`: it walks the wire
//! format and hands out borrowed slices of the body for the fields span metrics read
//! (resource attributes, span name, kind, times, attributes, status code), skipping
//! everything else (ids, events, links) without allocating.
//!
//! Why not prost: decoding into `opentelemetry-proto`'s types allocates a `String` or
//! `Vec` for every id, name, key and value of every span; measured on 188-byte spans
//! (`cargo bench -p benches --bench spanmetrics`) that alone ran at 1.18 M spans/s,
//! below the 1 M spans/s target for decode and aggregation together.
//!
//! Strings read are checked to be UTF-8, as prost checks them; fields never read are
//! skipped by their length, so a body with invalid UTF-8 only in a skipped field (an
//! event name, say) is taken where prost would refuse it. Everything prost accepts
//! gives the same spans here (differential tests and the `otlp_traces` fuzz target).

/// Why a body is not a protobuf `ExportTraceServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// Byte offset in the body where reading failed.
    pub offset: usize,
    /// What was wrong there.
    pub what: &'static str,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

/// One field's value on the wire.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
    /// A (deprecated) group, skipped whole: no field span metrics read is one.
    Group,
}

/// Walks the fields of one message. `base` is the message's offset in the whole body,
/// for error messages.
#[derive(Debug, Clone)]
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

/// Deeper than this is refused, as prost refuses (its recursion limit is 100).
const MAX_DEPTH: u32 = 100;

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Fields { buf, pos: 0, base }
    }

    fn error(&self, what: &'static str) -> WireError {
        WireError {
            offset: self.base + self.pos,
            what,
        }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(self.error("the body ends inside a varint"));
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(self.error("a varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.error("a varint is longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| self.error("a field runs past the end of its message"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next (field number, value, offset of the value in the body).
    fn next_field(&mut self) -> Result<Option<(u32, Value<'a>, usize)>, WireError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = self.field_number(tag)?;
        let at = self.base + self.pos;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let bytes = self.take(8)?;
                let mut le = [0u8; 8];
                le.copy_from_slice(bytes);
                Value::Fixed64(u64::from_le_bytes(le))
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| self.error("a length does not fit in memory"))?;
                let at_data = self.base + self.pos;
                return Ok(Some((field, Value::Bytes(self.take(len)?), at_data)));
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            3 => {
                self.skip_group(field, 1)?;
                Value::Group
            }
            4 => return Err(self.error("a group ends that never started")),
            _ => return Err(self.error("an unknown wire type (6 or 7)")),
        };
        Ok(Some((field, value, at)))
    }

    fn field_number(&self, tag: u64) -> Result<u32, WireError> {
        // As prost: a key past 32 bits, or field number 0, is not a field.
        let tag = u32::try_from(tag).map_err(|_| self.error("a field key is too large"))?;
        match tag >> 3 {
            0 => Err(self.error("field number 0")),
            field => Ok(field),
        }
    }

    /// Skips the fields of a group up to its end, as prost skips an unknown group.
    fn skip_group(&mut self, field: u32, depth: u32) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return Err(self.error("groups nest deeper than 100 levels"));
        }
        loop {
            if self.pos == self.buf.len() {
                return Err(self.error("the body ends inside a group"));
            }
            let tag = self.varint()?;
            let inner = self.field_number(tag)?;
            match tag & 7 {
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.take(8)?;
                }
                2 => {
                    let len = usize::try_from(self.varint()?)
                        .map_err(|_| self.error("a length does not fit in memory"))?;
                    self.take(len)?;
                }
                3 => self.skip_group(inner, depth + 1)?,
                4 if inner == field => return Ok(()),
                4 => return Err(self.error("a group ends with another field number")),
                5 => {
                    self.take(4)?;
                }
                _ => return Err(self.error("an unknown wire type (6 or 7)")),
            }
        }
    }
}

fn text(bytes: &[u8], at: usize) -> Result<&str, WireError> {
    std::str::from_utf8(bytes).map_err(|e| WireError {
        offset: at + e.valid_up_to(),
        what: "a string field is not UTF-8",
    })
}

fn wrong_type(at: usize) -> WireError {
    WireError {
        offset: at,
        what: "a field has the wrong wire type for its declared type",
    }
}

/// An attribute value as read off the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyRef<'a> {
    /// `string_value`.
    Str(&'a str),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bytes_value`.
    Bytes(&'a [u8]),
    /// `array_value` or `kvlist_value`, still encoded (the `AnyValue` message).
    Nested(&'a [u8]),
    /// No value set, or one this reader does not know.
    Empty,
}

/// A `KeyValue`: its key and value.
pub type Attribute<'a> = (&'a str, AnyRef<'a>);

fn any_value<'a>(buf: &'a [u8], base: usize, depth: u32) -> Result<AnyRef<'a>, WireError> {
    let mut fields = Fields::new(buf, base);
    let mut value = AnyRef::Empty;
    while let Some((field, v, at)) = fields.next_field()? {
        value = match (field, v) {
            (1, Value::Bytes(b)) => AnyRef::Str(text(b, at)?),
            (2, Value::Varint(n)) => AnyRef::Bool(n != 0),
            #[allow(clippy::cast_possible_wrap)]
            (3, Value::Varint(n)) => AnyRef::Int(n as i64),
            (4, Value::Fixed64(n)) => AnyRef::Double(f64::from_bits(n)),
            (5 | 6, Value::Bytes(b)) => {
                check_nested(b, at, depth + 1)?;
                AnyRef::Nested(buf)
            }
            (7, Value::Bytes(b)) => AnyRef::Bytes(b),
            // `string_value_strindex`: a dictionary reference this request cannot resolve.
            (8, Value::Varint(_)) => AnyRef::Empty,
            (1..=8, _) => return Err(wrong_type(at)),
            _ => value,
        };
    }
    Ok(value)
}

/// Walks an `ArrayValue` / `KeyValueList` for its structure and strings, bounding depth.
fn check_nested(buf: &[u8], base: usize, depth: u32) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError {
            offset: base,
            what: "attribute values nest deeper than 100 levels",
        });
    }
    let mut fields = Fields::new(buf, base);
    while let Some((field, v, at)) = fields.next_field()? {
        // ArrayValue.values (1: AnyValue) or KeyValueList.values (1: KeyValue).
        if field == 1 {
            let Value::Bytes(b) = v else {
                return Err(wrong_type(at));
            };
            // Either shape: an AnyValue, or a KeyValue whose value (2) is an AnyValue.
            let mut inner = Fields::new(b, at);
            while let Some((f, iv, iat)) = inner.next_field()? {
                match (f, iv) {
                    (1, Value::Bytes(s)) => {
                        text(s, iat)?;
                    }
                    (2, Value::Bytes(nested)) => {
                        any_value(nested, iat, depth + 1)?;
                    }
                    (5 | 6, Value::Bytes(nested)) => check_nested(nested, iat, depth + 1)?,
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Reads one `KeyValue`.
fn key_value<'a>(buf: &'a [u8], base: usize) -> Result<Attribute<'a>, WireError> {
    let mut fields = Fields::new(buf, base);
    let (mut key, mut value) = ("", AnyRef::Empty);
    while let Some((field, v, at)) = fields.next_field()? {
        match (field, v) {
            (1, Value::Bytes(b)) => key = text(b, at)?,
            (2, Value::Bytes(b)) => value = any_value(b, at, 1)?,
            (1 | 2, _) => return Err(wrong_type(at)),
            _ => {}
        }
    }
    Ok((key, value))
}

/// One span as span metrics read it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRef<'a> {
    /// `name`.
    pub name: &'a str,
    /// `kind`, as the enum's number.
    pub kind: i32,
    /// `start_time_unix_nano`.
    pub start: u64,
    /// `end_time_unix_nano`.
    pub end: u64,
    /// `status.code`, as the enum's number (0 without a status).
    pub status: i32,
    /// `attributes`.
    pub attributes: Vec<Attribute<'a>>,
}

#[allow(clippy::cast_possible_truncation)]
fn enum_value(n: u64) -> i32 {
    // An int32 enum on the wire: negative numbers are sign-extended to 64 bits.
    n as i32
}

fn status_code(buf: &[u8], base: usize) -> Result<i32, WireError> {
    let mut fields = Fields::new(buf, base);
    let mut code = 0;
    while let Some((field, v, at)) = fields.next_field()? {
        match (field, v) {
            (3, Value::Varint(n)) => code = enum_value(n),
            (2, Value::Bytes(b)) => {
                text(b, at)?;
            }
            (2 | 3, _) => return Err(wrong_type(at)),
            _ => {}
        }
    }
    Ok(code)
}

fn span<'a>(
    buf: &'a [u8],
    base: usize,
    attributes: Vec<Attribute<'a>>,
) -> Result<SpanRef<'a>, WireError> {
    let mut out = SpanRef {
        name: "",
        kind: 0,
        start: 0,
        end: 0,
        status: 0,
        attributes,
    };
    out.attributes.clear();
    let mut fields = Fields::new(buf, base);
    while let Some((field, v, at)) = fields.next_field()? {
        match (field, v) {
            (5, Value::Bytes(b)) => out.name = text(b, at)?,
            (6, Value::Varint(n)) => out.kind = enum_value(n),
            (7, Value::Fixed64(n)) => out.start = n,
            (8, Value::Fixed64(n)) => out.end = n,
            (9, Value::Bytes(b)) => out.attributes.push(key_value(b, at)?),
            (15, Value::Bytes(b)) => out.status = status_code(b, at)?,
            (3, Value::Bytes(b)) => {
                text(b, at)?;
            }
            (1 | 2 | 4 | 11 | 13, Value::Bytes(_))
            | (10 | 12 | 14, Value::Varint(_))
            | (16, Value::Fixed32) => {}
            (1..=16, _) => return Err(wrong_type(at)),
            _ => {}
        }
    }
    Ok(out)
}

/// What [`walk`] reports, in body order.
pub trait Visit<'a> {
    /// A `ResourceSpans` begins: its resource's attributes and how many spans it has.
    fn resource(&mut self, attributes: &[Attribute<'a>], spans: usize);
    /// One span of the resource reported last.
    fn span(&mut self, resource: &[Attribute<'a>], span: &SpanRef<'a>);
}

/// Walks a protobuf `ExportTraceServiceRequest`, reporting each resource and then
/// its spans to `visit`.
pub fn walk<'a>(body: &'a [u8], visit: &mut impl Visit<'a>) -> Result<(), WireError> {
    let mut request = Fields::new(body, 0);
    let mut resource: Vec<Attribute<'a>> = Vec::new();
    let mut scope_spans: Vec<(&'a [u8], usize)> = Vec::new();
    let mut spans: Vec<(&'a [u8], usize)> = Vec::new();
    let mut attributes = Vec::new();
    while let Some((field, v, at)) = request.next_field()? {
        let resource_spans = match (field, v) {
            (1, Value::Bytes(b)) => b,
            (1, _) => return Err(wrong_type(at)),
            _ => continue,
        };
        resource.clear();
        scope_spans.clear();
        // The resource may come after the spans on the wire: read it first.
        let mut fields = Fields::new(resource_spans, at);
        while let Some((field, v, at)) = fields.next_field()? {
            match (field, v) {
                (1, Value::Bytes(b)) => {
                    let mut r = Fields::new(b, at);
                    while let Some((field, v, at)) = r.next_field()? {
                        match (field, v) {
                            (1, Value::Bytes(kv)) => resource.push(key_value(kv, at)?),
                            (1, _) => return Err(wrong_type(at)),
                            _ => {}
                        }
                    }
                }
                (2, Value::Bytes(b)) => scope_spans.push((b, at)),
                (3, Value::Bytes(b)) => {
                    text(b, at)?;
                }
                (1..=3, _) => return Err(wrong_type(at)),
                _ => {}
            }
        }
        spans.clear();
        for &(scope, at) in &scope_spans {
            let mut fields = Fields::new(scope, at);
            while let Some((field, v, at)) = fields.next_field()? {
                match (field, v) {
                    (2, Value::Bytes(b)) => spans.push((b, at)),
                    (1, Value::Bytes(_)) => {}
                    (3, Value::Bytes(b)) => {
                        text(b, at)?;
                    }
                    (1..=3, _) => return Err(wrong_type(at)),
                    _ => {}
                }
            }
        }
        visit.resource(&resource, spans.len());
        for &(bytes, at) in &spans {
            let parsed = span(bytes, at, std::mem::take(&mut attributes))?;
            visit.span(&resource, &parsed);
            attributes = parsed.attributes;
        }
    }
    Ok(())
}
