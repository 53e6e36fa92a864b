//! Observation preprocessing: camera frame -> 3x224x224 f32 CHW, into a preallocated buffer.
//!
//! `cargo bench --no-default-features --bench preprocess`
//! Target: 640x480 rgb8 -> 3x224x224 in <= 2 ms on one core.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder};
use policy_node::observation::{ImageEncoding, ImagePreprocessor, JointReorder, RawImage};

const W: u32 = 640;
const H: u32 = 480;
const OUT: usize = 224;

/// A deterministic 640x480 test frame with gradients and texture (compresses like a scene,
/// not like a flat colour).
fn frame(channels: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(W as usize * H as usize * channels);
    for y in 0..H as usize {
        for x in 0..W as usize {
            // 16-pixel checkerboard with a little fine texture: roughly the JPEG size of a
            // camera frame at q90 (tens of KB), unlike pure noise.
            let t = (((x / 16 + y / 16) % 2) * 96 + (x * 3 + y * 5) % 32) as u8;
            let px = [(x * 255 / 639) as u8, (y * 255 / 479) as u8, t, 255];
            v.extend_from_slice(&px[..channels]);
        }
    }
    v
}

fn raw_encodings(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw_640x480_to_224");
    g.throughput(Throughput::Elements(1));
    let mut out = vec![0.0f32; 3 * OUT * OUT];
    for (name, enc) in [
        ("rgb8", ImageEncoding::Rgb8),
        ("bgr8", ImageEncoding::Bgr8),
        ("bgra8", ImageEncoding::Bgra8),
        ("mono8", ImageEncoding::Mono8),
    ] {
        let data = frame(enc.channels());
        let img = RawImage {
            width: W,
            height: H,
            step: W * enc.channels() as u32,
            encoding: enc,
            data: &data,
        };
        let mut pre = ImagePreprocessor::new(OUT, OUT);
        pre.raw_into(&img, &mut out).expect("valid frame");
        g.bench_function(name, |b| {
            b.iter(|| {
                pre.raw_into(black_box(&img), black_box(&mut out))
                    .expect("valid frame")
            })
        });
    }
    g.finish();
}

fn jpeg_decode(c: &mut Criterion) {
    let data = frame(3);
    let mut jpg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpg, 90)
        .write_image(&data, W, H, ExtendedColorType::Rgb8)
        .expect("encode");
    let mut out = vec![0.0f32; 3 * OUT * OUT];
    let mut pre = ImagePreprocessor::new(OUT, OUT);
    pre.compressed_into("rgb8; jpeg compressed bgr8", &jpg, &mut out)
        .expect("valid jpeg");
    let mut g = c.benchmark_group("compressed_640x480_to_224");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("jpeg_q90_{}B", jpg.len()), |b| {
        b.iter(|| {
            pre.compressed_into(
                "rgb8; jpeg compressed bgr8",
                black_box(&jpg),
                black_box(&mut out),
            )
            .expect("valid jpeg")
        })
    });
    g.finish();
}

fn joints(c: &mut Criterion) {
    let names: Vec<String> = (0..14).map(|i| format!("arm_joint_{i}")).collect();
    let mut wanted = names.clone();
    wanted.reverse();
    let mut reorder = JointReorder::new(wanted);
    let positions: Vec<f64> = (0..14).map(|i| i as f64 * 0.1).collect();
    let mut out = vec![0.0f32; 14];
    c.bench_function("joint_reorder_14_cached", |b| {
        b.iter(|| {
            reorder
                .apply_into(
                    black_box(&names),
                    black_box(&positions),
                    black_box(&mut out),
                )
                .expect("valid joints")
        })
    });
}

criterion_group!(benches, raw_encodings, jpeg_decode, joints);
criterion_main!(benches);
