//! openpi's message encoding: msgpack with numpy arrays as maps.
//!
//! An array is `{"__ndarray__": true, "data": <bytes>, "dtype": <numpy dtype string>,
//! "shape": [...]}` and a numpy scalar `{"__npgeneric__": true, "data": <value>, "dtype"}`;
//! the marker and field keys are msgpack *binaries* (openpi's Python packer writes `bytes`,
//! and its unpacker looks them up as `bytes`), the dtype a string such as `<f4` or `|u1`.
//! Decoding accepts the keys as binaries or strings.
//!
//! Everything here works on untrusted bytes: malformed msgpack, a wrong type, a byte count
//! that does not match the shape or a non-finite action is an error naming the key, never a
//! panic. Nesting is bounded by the msgpack reader (`rmpv`'s depth limit).

use half::f16;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rmpv::ValueRef;

use super::ServerTiming;

/// An array to encode: the element type on the wire.
pub enum WireArray<'a> {
    F32(ArrayViewD<'a, f32>),
    U8(ArrayViewD<'a, u8>),
    /// Floats in `[0, 1]` sent as `uint8` levels (an image), converted while encoding.
    Levels(ArrayViewD<'a, f32>),
}

/// Writing into a `Vec` cannot fail; the msgpack writer's error type still has to go somewhere.
fn w<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("encoding the observation: {e}"))
}

fn write_ndarray(buf: &mut Vec<u8>, array: &WireArray<'_>, shape: &[usize]) -> Result<(), String> {
    use rmp::encode::*;
    let (dtype, nbytes) = match array {
        WireArray::F32(a) => ("<f4", a.len() * 4),
        WireArray::U8(a) => ("|u1", a.len()),
        WireArray::Levels(a) => ("|u1", a.len()),
    };
    let nbytes = u32::try_from(nbytes)
        .map_err(|_| format!("an array of {nbytes} bytes is too large for one message"))?;
    w(write_map_len(buf, 4))?;
    w(write_bin(buf, b"__ndarray__"))?;
    w(write_bool(buf, true))?;
    w(write_bin(buf, b"data"))?;
    w(write_bin_len(buf, nbytes))?;
    buf.reserve(nbytes as usize);
    match array {
        WireArray::F32(a) => match a.as_slice() {
            Some(s) => s
                .iter()
                .for_each(|v| buf.extend_from_slice(&v.to_le_bytes())),
            None => a
                .iter()
                .for_each(|v| buf.extend_from_slice(&v.to_le_bytes())),
        },
        WireArray::U8(a) => match a.as_slice() {
            Some(s) => buf.extend_from_slice(s),
            None => buf.extend(a.iter().copied()),
        },
        WireArray::Levels(a) => write_levels(buf, a),
    }
    w(write_bin(buf, b"dtype"))?;
    w(write_str(buf, dtype))?;
    w(write_bin(buf, b"shape"))?;
    w(write_array_len(buf, shape.len() as u32))?;
    for d in shape {
        w(write_uint(buf, *d as u64))?;
    }
    Ok(())
}

/// One observation entry: a key (possibly nested under others, `images` -> `cam_high`) and
/// its value.
pub enum Entry<'a> {
    Array(WireArray<'a>),
    Text(&'a str),
    Map(Vec<(&'a str, Entry<'a>)>),
}

/// Encodes a (nested) observation map.
pub fn encode_map(entries: &[(&str, Entry<'_>)]) -> Result<Vec<u8>, String> {
    let bytes: usize = entries.iter().map(|(_, e)| entry_bytes(e)).sum();
    let mut buf = Vec::with_capacity(bytes + 64 * entries.len() + 16);
    write_entries(&mut buf, entries)?;
    Ok(buf)
}

fn entry_bytes(e: &Entry<'_>) -> usize {
    match e {
        Entry::Array(WireArray::F32(a)) => a.len() * 4,
        Entry::Array(WireArray::U8(a)) => a.len(),
        Entry::Array(WireArray::Levels(a)) => a.len(),
        Entry::Text(t) => t.len(),
        Entry::Map(m) => m.iter().map(|(_, e)| entry_bytes(e) + 64).sum(),
    }
}

fn write_entries(buf: &mut Vec<u8>, entries: &[(&str, Entry<'_>)]) -> Result<(), String> {
    w(rmp::encode::write_map_len(buf, entries.len() as u32))?;
    for (key, entry) in entries {
        w(rmp::encode::write_str(buf, key))?;
        match entry {
            Entry::Array(a) => {
                let shape = match a {
                    WireArray::F32(a) => a.shape().to_vec(),
                    WireArray::U8(a) => a.shape().to_vec(),
                    WireArray::Levels(a) => a.shape().to_vec(),
                };
                write_ndarray(buf, a, &shape)?;
            }
            Entry::Text(t) => w(rmp::encode::write_str(buf, t))?,
            Entry::Map(m) => write_entries(buf, m)?,
        }
    }
    Ok(())
}

/// The observation an export's model would be fed: each input by its name, float32, without
/// the batch dimension (`strip_batch`: the leading 1 dropped); `prompt` when a task is set.
pub fn encode_observation(
    inputs: &[(&str, ArrayViewD<'_, f32>)],
    prompt: Option<&str>,
    strip_batch: bool,
) -> Result<Vec<u8>, String> {
    let mut entries: Vec<(&str, Entry<'_>)> = Vec::with_capacity(inputs.len() + 1);
    for (name, a) in inputs {
        let view = if strip_batch {
            if a.ndim() == 0 || a.shape()[0] != 1 {
                return Err(format!(
                    "input `{name}` has shape {:?}: expected a batch of one",
                    a.shape()
                ));
            }
            a.index_axis(ndarray::Axis(0), 0)
        } else {
            a.view()
        };
        entries.push((name, Entry::Array(WireArray::F32(view))));
    }
    if let Some(p) = prompt {
        entries.push(("prompt", Entry::Text(p)));
    }
    encode_map(&entries)
}

/// Appends `[0, 1]` floats as `uint8` levels, in the view's logical order (a `3 x H x W`
/// image, possibly permuted to `H x W x 3`): each the nearest level to `x * 255` (`x` clamped
/// to `[0, 1]`, NaN as 0). Written straight into the message: no intermediate array.
fn write_levels(buf: &mut Vec<u8>, v: &ArrayViewD<'_, f32>) {
    // The nearest level without a float -> int conversion (scalar code): adding 2^23 to a
    // value in [0, 255] leaves it, rounded to the nearest integer, in the low mantissa bits.
    // `max` / `min` send NaN to 0 (`clamp` would keep it). This vectorises.
    #[allow(clippy::manual_clamp)]
    let level = |x: f32| ((x.max(0.0).min(1.0) * 255.0 + 8_388_608.0).to_bits() & 0xff) as u8;
    let chw = (v.ndim() == 3).then(|| v.view().permuted_axes(vec![2, 0, 1]));
    match (v.as_slice(), chw.as_ref().and_then(|c| c.as_slice())) {
        // Stored in this order (CHW as the node prepares it).
        (Some(s), _) => buf.extend(s.iter().map(|x| level(*x))),
        // HWC over CHW storage: channels interleaved, one pass over the output.
        (None, Some(chw)) => {
            let plane = chw.len() / 3;
            let start = buf.len();
            buf.resize(start + 3 * plane, 0);
            for (i, px) in buf[start..].chunks_exact_mut(3).enumerate() {
                px[0] = level(chw[i]);
                px[1] = level(chw[plane + i]);
                px[2] = level(chw[2 * plane + i]);
            }
        }
        _ => buf.extend(v.iter().map(|x| level(*x))),
    }
}

/// Puts `value` at `path` in a (nested) entry list: `a/b` under map `a` when `nested`.
fn insert_at<'a>(
    entries: &mut Vec<(&'a str, Entry<'a>)>,
    path: &'a str,
    nested: bool,
    value: Entry<'a>,
) {
    match path.split_once('/').filter(|_| nested) {
        Some((head, rest)) => {
            let i = match entries.iter().position(|(k, _)| *k == head) {
                Some(i) => i,
                None => {
                    entries.push((head, Entry::Map(Vec::new())));
                    entries.len() - 1
                }
            };
            if let Entry::Map(inner) = &mut entries[i].1 {
                insert_at(inner, rest, nested, value);
            }
        }
        None => entries.push((path, value)),
    }
}

/// The observation an I/O map's `openpi:` section describes: each input under its key
/// (nested at `/` or flat), images as the section says (`[3, H, W]` floats in `[0, 1]` in,
/// `H x W x 3` or `3 x H x W`, `uint8` or float32 out), everything else float32; the task
/// under the prompt key. Inputs carry the batch dimension of one.
pub fn encode_with_schema(
    inputs: &[(&str, ArrayViewD<'_, f32>)],
    schema: &crate::runtime::OpenpiSchema,
    prompt: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut views = Vec::with_capacity(inputs.len());
    for (name, a) in inputs {
        if a.ndim() == 0 || a.shape()[0] != 1 {
            return Err(format!(
                "input `{name}` has shape {:?}: expected a batch of one",
                a.shape()
            ));
        }
        let v = a.index_axis(ndarray::Axis(0), 0);
        let image = schema
            .images
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| *i);
        let v = match image {
            Some(img) => {
                if v.ndim() != 3 || v.shape()[0] != 3 {
                    return Err(format!(
                        "image input `{name}` has shape {:?}: expected [3, H, W]",
                        v.shape()
                    ));
                }
                if img.hwc {
                    v.permuted_axes(vec![1, 2, 0])
                } else {
                    v
                }
            }
            None => v,
        };
        views.push((*name, v, image.is_some_and(|i| i.uint8)));
    }
    let mut entries: Vec<(&str, Entry<'_>)> = Vec::with_capacity(inputs.len() + 1);
    for (name, v, uint8) in &views {
        let array = if *uint8 {
            WireArray::Levels(v.view())
        } else {
            WireArray::F32(v.view())
        };
        insert_at(&mut entries, name, schema.nested, Entry::Array(array));
    }
    if let (Some(key), Some(p)) = (schema.prompt_key.as_deref(), prompt) {
        insert_at(&mut entries, key, schema.nested, Entry::Text(p));
    }
    encode_map(&entries)
}

/// A decoded answer.
#[derive(Debug)]
pub struct Answer {
    /// `[H, D]`.
    pub actions: ArrayD<f32>,
    pub timing: ServerTiming,
}

fn key_str<'a>(k: &'a ValueRef<'a>) -> Option<&'a str> {
    match k {
        ValueRef::String(s) => s.as_str(),
        ValueRef::Binary(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn lookup<'a, 'b>(map: &'b [(ValueRef<'a>, ValueRef<'a>)], key: &str) -> Option<&'b ValueRef<'a>> {
    map.iter()
        .find(|(k, _)| key_str(k) == Some(key))
        .map(|(_, v)| v)
}

fn keys(map: &[(ValueRef<'_>, ValueRef<'_>)]) -> String {
    let names: Vec<String> = map
        .iter()
        .map(|(k, _)| key_str(k).map_or_else(|| format!("{k}"), |s| format!("`{s}`")))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A numpy array in openpi's encoding: `(dtype, shape, data)`.
fn ndarray_parts<'a>(
    v: &'a ValueRef<'a>,
    what: &str,
) -> Result<(&'a str, Vec<usize>, &'a [u8]), String> {
    let ValueRef::Map(m) = v else {
        return Err(format!("`{what}` is not an array (a msgpack {})", kind(v)));
    };
    if !matches!(lookup(m, "__ndarray__"), Some(ValueRef::Boolean(true))) {
        return Err(format!(
            "`{what}` is a map without the `__ndarray__` marker (keys: {})",
            keys(m)
        ));
    }
    let dtype = match lookup(m, "dtype") {
        Some(ValueRef::String(s)) => s
            .as_str()
            .ok_or_else(|| format!("`{what}`: its dtype is not UTF-8"))?,
        Some(ValueRef::Binary(b)) => {
            std::str::from_utf8(b).map_err(|_| format!("`{what}`: its dtype is not UTF-8"))?
        }
        _ => return Err(format!("`{what}` has no dtype string")),
    };
    let shape = match lookup(m, "shape") {
        Some(ValueRef::Array(dims)) => dims
            .iter()
            .map(|d| match d {
                ValueRef::Integer(i) => i
                    .as_u64()
                    .and_then(|u| usize::try_from(u).ok())
                    .ok_or_else(|| format!("`{what}`: shape entry {i} is not a size")),
                other => Err(format!("`{what}`: shape entry {other} is not an integer")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(format!("`{what}` has no shape list")),
    };
    let data = match lookup(m, "data") {
        Some(ValueRef::Binary(b)) => *b,
        _ => return Err(format!("`{what}` has no data bytes")),
    };
    Ok((dtype, shape, data))
}

fn kind(v: &ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Nil => "nil",
        ValueRef::Boolean(_) => "boolean",
        ValueRef::Integer(_) => "integer",
        ValueRef::F32(_) | ValueRef::F64(_) => "float",
        ValueRef::String(_) => "string",
        ValueRef::Binary(_) => "binary",
        ValueRef::Array(_) => "array",
        ValueRef::Map(_) => "map",
        ValueRef::Ext(..) => "extension",
    }
}

/// A float array's values as f32 (`<f4`, `<f8`, `<f2`, and their big-endian forms).
fn float_values(dtype: &str, data: &[u8], count: usize, what: &str) -> Result<Vec<f32>, String> {
    let (size, big) = match dtype {
        "<f4" | "=f4" | "float32" => (4, false),
        ">f4" => (4, true),
        "<f8" | "=f8" | "float64" => (8, false),
        ">f8" => (8, true),
        "<f2" | "=f2" | "float16" => (2, false),
        ">f2" => (2, true),
        other => {
            return Err(format!(
                "`{what}` has dtype `{other}`; expected a float array (<f4, <f8 or <f2)"
            ))
        }
    };
    let need = count
        .checked_mul(size)
        .ok_or_else(|| format!("`{what}`: its shape is too large"))?;
    if data.len() != need {
        return Err(format!(
            "`{what}` has {} data bytes; its shape and dtype `{dtype}` need {need}",
            data.len()
        ));
    }
    let values = match (size, big) {
        (4, false) => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (4, true) => data
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (8, false) => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        (8, true) => data
            .chunks_exact(8)
            .map(|c| f64::from_be_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        (_, false) => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        (_, true) => data
            .chunks_exact(2)
            .map(|c| f16::from_be_bytes([c[0], c[1]]).to_f32())
            .collect(),
    };
    Ok(values)
}

fn number(v: &ValueRef<'_>) -> Option<f64> {
    match v {
        ValueRef::F64(x) => Some(*x),
        ValueRef::F32(x) => Some(f64::from(*x)),
        ValueRef::Integer(i) => i.as_f64(),
        // A numpy scalar: {"__npgeneric__": true, "data": <value>, "dtype"}.
        ValueRef::Map(m) if matches!(lookup(m, "__npgeneric__"), Some(ValueRef::Boolean(true))) => {
            lookup(m, "data").and_then(number)
        }
        _ => None,
    }
}

/// Deepest nesting of maps and arrays accepted in a message (openpi's answers nest 3 deep).
pub const MAX_DEPTH: usize = 32;

/// Walks the msgpack value at the start of `bytes` without recursion, checking that every
/// length fits the message and that maps and arrays nest at most [`MAX_DEPTH`] deep (the
/// decoder that follows recurses). Returns the value's length in bytes.
fn check_structure(bytes: &[u8]) -> Result<usize, String> {
    use rmp::Marker;
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<usize, String> {
        let start = *at;
        let end = start
            .checked_add(n)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| format!("cut short at byte {start} (needs {n} more)"))?;
        *at = end;
        Ok(start)
    };
    let be = |at: &mut usize, n: usize| -> Result<u64, String> {
        let s = take(at, n)?;
        Ok(bytes[s..s + n]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    let mut stack: Vec<u64> = Vec::new();
    let mut pending: u64 = 1;
    loop {
        if pending == 0 {
            match stack.pop() {
                Some(p) => {
                    pending = p;
                    continue;
                }
                None => return Ok(at),
            }
        }
        pending -= 1;
        let s = take(&mut at, 1)?;
        let children = match Marker::from_u8(bytes[s]) {
            Marker::FixArray(n) => u64::from(n),
            Marker::Array16 => be(&mut at, 2)?,
            Marker::Array32 => be(&mut at, 4)?,
            Marker::FixMap(n) => 2 * u64::from(n),
            Marker::Map16 => 2 * be(&mut at, 2)?,
            Marker::Map32 => 2 * be(&mut at, 4)?,
            m => {
                let skip = match m {
                    Marker::FixStr(n) => u64::from(n),
                    Marker::Str8 | Marker::Bin8 => be(&mut at, 1)?,
                    Marker::Str16 | Marker::Bin16 => be(&mut at, 2)?,
                    Marker::Str32 | Marker::Bin32 => be(&mut at, 4)?,
                    Marker::U8 | Marker::I8 => 1,
                    Marker::U16 | Marker::I16 => 2,
                    Marker::U32 | Marker::I32 | Marker::F32 => 4,
                    Marker::U64 | Marker::I64 | Marker::F64 => 8,
                    Marker::FixExt1 => 2,
                    Marker::FixExt2 => 3,
                    Marker::FixExt4 => 5,
                    Marker::FixExt8 => 9,
                    Marker::FixExt16 => 17,
                    Marker::Ext8 => 1 + be(&mut at, 1)?,
                    Marker::Ext16 => 1 + be(&mut at, 2)?,
                    Marker::Ext32 => 1 + be(&mut at, 4)?,
                    Marker::Reserved => {
                        return Err(format!("byte {s} is 0xc1, which msgpack never uses"))
                    }
                    _ => 0,
                };
                let skip = usize::try_from(skip).map_err(|_| "a length too large".to_string())?;
                take(&mut at, skip)?;
                0
            }
        };
        if children > 0 {
            if stack.len() >= MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
            // Each child needs at least one byte: a count beyond the message is cut short.
            if children > (bytes.len() - at) as u64 {
                return Err(format!(
                    "cut short: a container at byte {s} holds {children} items, the message {} more bytes",
                    bytes.len() - at
                ));
            }
            stack.push(pending);
            pending = children;
        }
    }
}

fn read_root<'a>(bytes: &'a [u8], what: &str) -> Result<ValueRef<'a>, String> {
    check_structure(bytes)
        .map_err(|e| format!("{what} is not valid msgpack ({} bytes): {e}", bytes.len()))?;
    let mut rd = bytes;
    let v = rmpv::decode::read_value_ref(&mut rd)
        .map_err(|e| format!("{what} is not valid msgpack ({} bytes): {e}", bytes.len()))?;
    if !rd.is_empty() {
        return Err(format!(
            "{what} has {} bytes after its msgpack value",
            rd.len()
        ));
    }
    Ok(v)
}

/// Decodes an inference answer. `expected`: the `[H, D]` the caller needs (`None`: any).
pub fn decode_answer(bytes: &[u8], expected: &[Option<usize>]) -> Result<Answer, String> {
    let root = read_root(bytes, "the answer")?;
    let ValueRef::Map(m) = &root else {
        return Err(format!(
            "the answer is a msgpack {}, not a map",
            kind(&root)
        ));
    };
    let actions = lookup(m, "actions")
        .ok_or_else(|| format!("the answer has no `actions` (keys: {})", keys(m)))?;
    let (dtype, shape, data) = ndarray_parts(actions, "actions")?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| format!("`actions`: shape {shape:?} is too large"))?;
    let values = float_values(dtype, data, count, "actions")?;
    if shape.len() != 2 {
        return Err(format!(
            "`actions` has shape {shape:?}; expected [H, D] = {}",
            super::fmt_shape(expected)
        ));
    }
    let fits = expected.len() == 2
        && expected
            .iter()
            .zip(&shape)
            .all(|(e, s)| e.is_none_or(|e| e == *s));
    if !fits || shape.contains(&0) {
        return Err(format!(
            "`actions` has shape {shape:?}; expected {}",
            super::fmt_shape(expected)
        ));
    }
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "`actions` holds a non-finite value ({}) at row {}, column {}",
            values[k],
            k / shape[1],
            k % shape[1]
        ));
    }
    let actions =
        ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| format!("`actions`: {e}"))?;
    let mut timing = ServerTiming::default();
    if let Some(ValueRef::Map(t)) = lookup(m, "server_timing") {
        timing.infer_ms = lookup(t, "infer_ms").and_then(number);
        timing.prev_total_ms = lookup(t, "prev_total_ms").and_then(number);
    }
    Ok(Answer { actions, timing })
}

/// The server's metadata as JSON: byte strings and arrays are summarised, not expanded.
pub fn decode_metadata(bytes: &[u8]) -> Result<serde_json::Value, String> {
    let root = read_root(bytes, "the metadata")?;
    if !matches!(root, ValueRef::Map(_)) {
        return Err(format!(
            "the metadata is a msgpack {}, not a map",
            kind(&root)
        ));
    }
    Ok(to_json(&root))
}

fn to_json(v: &ValueRef<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        ValueRef::Nil => J::Null,
        ValueRef::Boolean(b) => J::Bool(*b),
        ValueRef::Integer(i) => i
            .as_i64()
            .map(J::from)
            .or_else(|| i.as_u64().map(J::from))
            .unwrap_or(J::Null),
        ValueRef::F32(x) => J::from(f64::from(*x)),
        ValueRef::F64(x) => J::from(*x),
        ValueRef::String(s) => J::String(s.as_str().unwrap_or("<not UTF-8>").to_string()),
        ValueRef::Binary(b) => J::String(format!("<{} bytes>", b.len())),
        ValueRef::Array(a) => J::Array(a.iter().map(to_json).collect()),
        ValueRef::Map(m) => {
            if let Ok((dtype, shape, _)) = ndarray_parts(v, "metadata") {
                return J::String(format!("ndarray {dtype} {shape:?}"));
            }
            if matches!(lookup(m, "__npgeneric__"), Some(ValueRef::Boolean(true))) {
                return number(v).map_or(J::Null, J::from);
            }
            J::Object(
                m.iter()
                    .map(|(k, v)| {
                        let key = key_str(k).map_or_else(|| format!("{k}"), str::to_string);
                        (key, to_json(v))
                    })
                    .collect(),
            )
        }
        ValueRef::Ext(t, b) => J::String(format!("<extension {t}, {} bytes>", b.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's encoding: keys nested at `/` (or flat), images as `uint8` levels in the
    /// asked layout (HWC interleaves the channels), NaN and out-of-range values clamped.
    #[test]
    fn the_schema_nests_keys_and_sends_images_as_levels() {
        use crate::runtime::{OpenpiImage, OpenpiSchema};
        use rmpv::Value;
        // A 3 x 1 x 2 image: channel c, pixel x holds (10 c + x) / 255; one NaN, one > 1.
        let mut img = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 1, 2]));
        for c in 0..3 {
            for x in 0..2 {
                img[[0, c, 0, x]] = (10 * c + x) as f32 / 255.0;
            }
        }
        img[[0, 0, 0, 0]] = f32::NAN;
        img[[0, 2, 0, 1]] = 7.0;
        let state = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![0.5f32, -1.0]).unwrap();
        let inputs = [("obs/state", state.view()), ("images/top", img.view())];
        let value = |bytes: &[u8]| rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let get = |v: &Value, k: &str| -> Value {
            v.as_map()
                .unwrap()
                .iter()
                .find(|(key, _)| key.as_str() == Some(k) || key.as_slice() == Some(k.as_bytes()))
                .unwrap_or_else(|| panic!("no `{k}` in {v}"))
                .1
                .clone()
        };
        for (nested, hwc, expected) in [
            (true, false, vec![0u8, 1, 10, 11, 20, 255]),
            (false, true, vec![0u8, 10, 20, 1, 11, 255]),
        ] {
            let schema = OpenpiSchema {
                nested,
                prompt_key: Some("prompt".into()),
                images: vec![("images/top".into(), OpenpiImage { hwc, uint8: true })],
                ..Default::default()
            };
            let bytes = encode_with_schema(&inputs, &schema, Some("go")).unwrap();
            let v = value(&bytes);
            let image = if nested {
                get(&get(&v, "images"), "top")
            } else {
                get(&v, "images/top")
            };
            assert_eq!(get(&image, "dtype").as_str(), Some("|u1"));
            assert_eq!(
                get(&image, "data").as_slice(),
                Some(&expected[..]),
                "hwc {hwc}"
            );
            let shape: Vec<u64> = get(&image, "shape")
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(shape, if hwc { vec![1, 2, 3] } else { vec![3, 1, 2] });
            let state = if nested {
                get(&get(&v, "obs"), "state")
            } else {
                get(&v, "obs/state")
            };
            assert_eq!(get(&state, "dtype").as_str(), Some("<f4"));
            assert_eq!(get(&v, "prompt").as_str(), Some("go"));
        }
        // No prompt key: the task is not sent.
        let schema = OpenpiSchema {
            prompt_key: None,
            ..Default::default()
        };
        let v = value(&encode_with_schema(&inputs[..1], &schema, Some("go")).unwrap());
        assert_eq!(v.as_map().unwrap().len(), 1);
    }

    fn answer(dtype: &str, shape: &[u64], data: &[u8]) -> Vec<u8> {
        use rmp::encode::*;
        let mut b = Vec::new();
        write_map_len(&mut b, 2).unwrap();
        write_str(&mut b, "actions").unwrap();
        write_map_len(&mut b, 4).unwrap();
        write_bin(&mut b, b"__ndarray__").unwrap();
        write_bool(&mut b, true).unwrap();
        write_bin(&mut b, b"data").unwrap();
        write_bin(&mut b, data).unwrap();
        write_bin(&mut b, b"dtype").unwrap();
        write_str(&mut b, dtype).unwrap();
        write_bin(&mut b, b"shape").unwrap();
        write_array_len(&mut b, shape.len() as u32).unwrap();
        for d in shape {
            write_uint(&mut b, *d).unwrap();
        }
        write_str(&mut b, "server_timing").unwrap();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "infer_ms").unwrap();
        write_f64(&mut b, 12.5).unwrap();
        b
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn answers_decode_in_every_float_dtype() {
        let v = [0.5f32, -1.0, 2.0, 3.25, 4.0, -0.125];
        let a =
            decode_answer(&answer("<f4", &[2, 3], &f32_bytes(&v)), &[Some(2), Some(3)]).unwrap();
        assert_eq!(a.actions.as_slice().unwrap(), &v);
        assert_eq!(a.timing.infer_ms, Some(12.5));
        let f8: Vec<u8> = v.iter().flat_map(|x| f64::from(*x).to_le_bytes()).collect();
        let a = decode_answer(&answer("<f8", &[2, 3], &f8), &[None, Some(3)]).unwrap();
        assert_eq!(a.actions.as_slice().unwrap(), &v);
        let f2: Vec<u8> = v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        let a = decode_answer(&answer("<f2", &[2, 3], &f2), &[None, None]).unwrap();
        assert_eq!(a.actions.as_slice().unwrap(), &v);
        let be: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        let a = decode_answer(&answer(">f4", &[2, 3], &be), &[None, None]).unwrap();
        assert_eq!(a.actions.as_slice().unwrap(), &v);
    }

    #[test]
    fn bad_answers_are_errors_naming_the_problem() {
        let v = f32_bytes(&[0.0; 6]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (answer("<f4", &[2, 3], &v), "expected [2, 4]"),
            (answer("<i8", &[2, 3], &v), "dtype `<i8`"),
            (answer("<f4", &[2, 4], &v), "24 data bytes"),
            (answer("<f4", &[6], &v), "expected [H, D]"),
            (answer("<f4", &[1, 2, 3], &v), "expected [H, D]"),
            (
                answer(
                    "<f4",
                    &[2, 3],
                    &f32_bytes(&[0.0, 0.0, 0.0, 0.0, f32::NAN, 0.0]),
                ),
                "non-finite value (NaN) at row 1, column 1",
            ),
            (vec![0xc1], "not valid msgpack"),
            (vec![0x93, 1, 2, 3], "not a map"),
            (vec![0x81, 0xa1, b'x', 1], "no `actions` (keys: `x`)"),
            (vec![0x80, 0x80], "bytes after"),
            (
                {
                    let mut b = answer("<f4", &[2, 3], &v);
                    b.truncate(b.len() / 2);
                    b
                },
                "not valid msgpack",
            ),
        ];
        for (bytes, needle) in cases {
            let e = decode_answer(&bytes, &[Some(2), Some(4)]).unwrap_err();
            let e = if needle == "expected [2, 4]" || needle.contains("dtype") {
                e
            } else {
                decode_answer(&bytes, &[Some(2), Some(3)]).unwrap_err()
            };
            assert!(e.contains(needle), "`{needle}` not in: {e}");
        }
    }

    #[test]
    fn decodes_what_openpi_client_packs() {
        // Written by openpi_client.msgpack_numpy.packb (fuzz/seeds/openpi, generated with it).
        let a = decode_answer(
            include_bytes!("../../../fuzz/seeds/openpi/answer.msgpack"),
            &[Some(3), Some(4)],
        )
        .unwrap();
        let want: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(a.actions.as_slice().unwrap(), want.as_slice());
        assert_eq!(a.timing.infer_ms, Some(1.5));
        assert_eq!(a.timing.prev_total_ms, Some(2.0));
        let a = decode_answer(
            include_bytes!("../../../fuzz/seeds/openpi/answer_f64.msgpack"),
            &[Some(2), Some(2)],
        )
        .unwrap();
        assert_eq!(a.actions.as_slice().unwrap(), &[1.0; 4]);
        let m = decode_metadata(include_bytes!(
            "../../../fuzz/seeds/openpi/metadata.msgpack"
        ))
        .unwrap();
        assert_eq!(m["policy"], "pi05");
        assert_eq!(m["action_horizon"], 50);
        assert_eq!(m["reset_pose"], "ndarray <f4 [14]");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut b = vec![0x91u8; 100_000];
        b.push(0xc0);
        assert!(decode_answer(&b, &[None, None]).is_err());
        assert!(decode_metadata(&b).is_err());
    }

    #[test]
    fn observations_round_trip_through_the_decoder() {
        let state = ArrayD::from_shape_vec(vec![1, 3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let bytes = encode_observation(&[("state", state.view())], Some("pick"), true).unwrap();
        let root = read_root(&bytes, "obs").unwrap();
        let ValueRef::Map(m) = &root else { panic!() };
        let (dtype, shape, data) = ndarray_parts(lookup(m, "state").unwrap(), "state").unwrap();
        assert_eq!((dtype, shape.as_slice()), ("<f4", &[3usize][..]));
        assert_eq!(
            float_values(dtype, data, 3, "s").unwrap(),
            vec![1.0, 2.0, 3.0]
        );
        assert!(
            matches!(lookup(m, "prompt"), Some(ValueRef::String(s)) if s.as_str() == Some("pick"))
        );
        // The array's marker keys are binaries, as openpi's unpacker looks them up.
        let ValueRef::Map(arr) = lookup(m, "state").unwrap() else {
            panic!()
        };
        assert!(matches!(arr[0].0, ValueRef::Binary(b"__ndarray__")));
        let meta = decode_metadata(&bytes).unwrap();
        assert_eq!(meta["state"], "ndarray <f4 [3]");
        assert_eq!(meta["prompt"], "pick");
    }
}
