//! What every fuzz target shares: an allocator that refuses allocations the input cannot
//! justify.
//!
//! libFuzzer already turns panics, aborts and memory blow-ups (`-rss_limit_mb`) into saved
//! crashing inputs. What it does not see is a parser that allocates a buffer sized by a length
//! field it read, before checking that field against the bytes present: with small inputs the
//! allocation often succeeds, the bug stays hidden, and a real file claiming 2^40 elements
//! later aborts the process. So each target runs the code under test inside [`with_budget`],
//! and this allocator aborts (a crash libFuzzer saves) on any single allocation larger than
//! `BASE + per_byte * input length`. A claimed size that was checked against the data stays
//! within a small factor of the input; one that was not is, for nearly every mutation, far
//! above it.
//!
//! The budget covers allocations made from Rust. C and C++ code (the rmw behind r2r's
//! deserialization) allocates with `malloc` directly and is covered by libFuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb` instead.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Allowed for any single allocation whatever the input (scratch buffers, tables, the
/// fixed-size outputs the targets ask for).
pub const BASE: usize = 1 << 20;

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

struct Bounded;

impl Bounded {
    #[inline]
    fn check(size: usize) {
        let limit = LIMIT.load(Ordering::Relaxed);
        if size > limit {
            // Disarm first: printing allocates.
            LIMIT.store(usize::MAX, Ordering::Relaxed);
            eprintln!(
                "fuzz harness: allocation of {size} bytes exceeds the budget of {limit} bytes \
                 for this input (a size taken from the input without checking it against the \
                 bytes present?)"
            );
            std::process::abort();
        }
    }
}

// SAFETY: forwards every call to `System` unchanged; only inspects the requested size.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// Runs `f` with single allocations limited to `BASE + per_byte * input_len` bytes.
/// libFuzzer runs a target on one thread, so a process-wide limit is the input's limit.
pub fn with_budget<R>(input_len: usize, per_byte: usize, f: impl FnOnce() -> R) -> R {
    // Panics: libfuzzer-sys installs a hook that aborts before unwinding. That would also
    // abort on panics the code under test catches on purpose (a codec's panic turned into a
    // decode error, as the node does), so the hook here only prints (std's default hook,
    // with the budget disarmed first: printing allocates). A panic that escapes the target
    // still aborts: libfuzzer-sys runs every input under `catch_unwind` and aborts on `Err`.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        drop(std::panic::take_hook()); // libfuzzer-sys's aborting hook
        let default = std::panic::take_hook(); // std's default, printing hook
        std::panic::set_hook(Box::new(move |info| {
            LIMIT.store(usize::MAX, Ordering::Relaxed);
            default(info);
        }));
    });
    let limit = BASE.saturating_add(per_byte.saturating_mul(input_len));
    LIMIT.store(limit, Ordering::Relaxed);
    let r = f();
    LIMIT.store(usize::MAX, Ordering::Relaxed);
    r
}

/// The generated part of the seed corpora (`fuzz/seeds/<target>/`), written by
/// `tools/fuzz.sh seeds` (an ignored test, so it runs uninstrumented). Metadata and parameter
/// seeds are the case files under `tests/cases/`, which `tools/fuzz.sh` passes as well.
#[cfg(test)]
mod seeds {
    use std::path::{Path, PathBuf};

    use image::codecs::jpeg::JpegEncoder;
    use image::codecs::png::PngEncoder;
    use image::{ExtendedColorType, ImageEncoder};
    use policy_node::npy::{encode_npy, NpyData};

    fn dir(target: &str) -> PathBuf {
        let d = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(target: &str, name: &str, bytes: &[u8]) {
        std::fs::write(dir(target).join(name), bytes).unwrap();
    }

    fn pixels(w: u32, h: u32, c: u32) -> Vec<u8> {
        (0..w * h * c).map(|i| (i * 37 % 251) as u8).collect()
    }

    fn with_prefix(prefix: u8, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![prefix];
        v.extend_from_slice(bytes);
        v
    }

    /// npy header for any descr, format 1.0.
    fn npy_raw(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(data);
        out
    }

    fn jpeg(w: u32, h: u32, color: ExtendedColorType, c: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        JpegEncoder::new_with_quality(&mut buf, 80)
            .write_image(&pixels(w, h, c), w, h, color)
            .unwrap();
        buf
    }

    fn png(w: u32, h: u32, color: ExtendedColorType, c: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        PngEncoder::new(&mut buf)
            .write_image(&pixels(w, h, c), w, h, color)
            .unwrap();
        buf
    }

    #[test]
    #[ignore = "writes the seed corpora; run by tools/fuzz.sh seeds"]
    fn write_seeds() {
        // .npy: each dtype family, both byte orders, Fortran order, format 2.0.
        write(
            "npy",
            "f4_2x3.npy",
            &encode_npy(&[2, 3], NpyData::F32(&[0.5; 6])),
        );
        write(
            "npy",
            "f8_4.npy",
            &encode_npy(&[4], NpyData::F64(&[1.0, -2.0, 3.5, 1e9])),
        );
        write("npy", "i8_scalar.npy", &encode_npy(&[], NpyData::I64(&[7])));
        write(
            "npy",
            "u1_3x2_fortran.npy",
            &npy_raw("|u1", true, "(3, 2)", &[1, 2, 3, 4, 5, 6]),
        );
        write(
            "npy",
            "f2_be.npy",
            &npy_raw(">f2", false, "(2,)", &[0x3c, 0, 0xc0, 0]),
        );
        write("npy", "b1_empty.npy", &npy_raw("|b1", false, "(0, 4)", &[]));
        // Format 2.0: a 4-byte header length.
        let v1 = encode_npy(&[1, 2], NpyData::F32(&[1.0, 2.0]));
        let header_len = u32::from(u16::from_le_bytes([v1[8], v1[9]]));
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend(header_len.to_le_bytes());
        v2.extend_from_slice(&v1[10..]);
        write("npy", "f4_v2.npy", &v2);

        // Compressed images: the first byte picks the format string (0 jpeg, 1 png, 4 "").
        for (name, bytes) in [
            (
                "rgb_16x12.jpg",
                with_prefix(0, &jpeg(16, 12, ExtendedColorType::Rgb8, 3)),
            ),
            (
                "grey_9x7.jpg",
                with_prefix(2, &jpeg(9, 7, ExtendedColorType::L8, 1)),
            ),
            (
                "rgb_5x4.png",
                with_prefix(1, &png(5, 4, ExtendedColorType::Rgb8, 3)),
            ),
            (
                "rgba_3x3.png",
                with_prefix(3, &png(3, 3, ExtendedColorType::Rgba8, 4)),
            ),
            (
                "grey16_4x2.png",
                with_prefix(4, &png(4, 2, ExtendedColorType::L16, 2)),
            ),
            (
                "la_2x2.png",
                with_prefix(1, &png(2, 2, ExtendedColorType::La8, 2)),
            ),
        ] {
            write("image_compressed", name, &bytes);
        }

        #[cfg(feature = "ros")]
        cdr_seeds();
    }

    /// Real messages as the rmw serializes them, behind the target's kind byte.
    #[cfg(feature = "ros")]
    fn cdr_seeds() {
        use r2r::sensor_msgs::msg::{CompressedImage, Image, JointState};
        use r2r::WrappedTypesupport;

        let mut js = JointState {
            name: vec!["a".into(), "b".into(), "shoulder_pan".into()],
            position: vec![0.1, -0.2, 3.0],
            velocity: vec![0.0; 3],
            ..Default::default()
        };
        js.header.stamp.sec = 12;
        js.header.stamp.nanosec = 345;
        js.header.frame_id = "base".into();
        let bytes = js.to_serialized_bytes().unwrap();
        write("cdr", "joint_state", &with_prefix(0, &bytes));
        write("cdr", "header", &with_prefix(3, &bytes));
        let empty = JointState::default().to_serialized_bytes().unwrap();
        write("cdr", "joint_state_empty", &with_prefix(0, &empty));

        for (i, (enc, c)) in [("rgb8", 3u32), ("bgra8", 4), ("mono8", 1), ("16UC1", 2)]
            .into_iter()
            .enumerate()
        {
            let (w, h) = (4u32, 3u32);
            let img = Image {
                width: w,
                height: h,
                step: w * c + (i as u32 % 2) * 2,
                encoding: enc.into(),
                data: pixels(w * c + (i as u32 % 2) * 2, h, 1),
                ..Default::default()
            };
            let b = img.to_serialized_bytes().unwrap();
            write("cdr", &format!("image_{enc}"), &with_prefix(1, &b));
        }
        let c = CompressedImage {
            format: "rgb8; jpeg compressed bgr8".into(),
            data: jpeg(8, 6, ExtendedColorType::Rgb8, 3),
            ..Default::default()
        };
        write(
            "cdr",
            "compressed_jpeg",
            &with_prefix(2, &c.to_serialized_bytes().unwrap()),
        );
        let c = CompressedImage {
            format: "png".into(),
            data: png(3, 2, ExtendedColorType::Rgb8, 3),
            ..Default::default()
        };
        write(
            "cdr",
            "compressed_png",
            &with_prefix(2, &c.to_serialized_bytes().unwrap()),
        );
    }
}
