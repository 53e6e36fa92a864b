//! Replay's per-message decoding: CDR bytes of the demo recording's message types to r2r's
//! message types, read in place (`policy_node::bag::cdr`) versus through the rmw (r2r's
//! `from_serialized_bytes`, the `_rmw` cases).
//!
//! `tools/cargo bench --bench decode` (needs the `ros` feature and the ROS 2 environment).
//! Replay reads the stamp of every camera message and decodes every joint state; the pixels
//! of a camera message are decoded only for the observations chunks are computed from.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use policy_node::bag::decode::{self, MessageKind};
use r2r::WrappedTypesupport;

fn image_cdr(w: u32, h: u32) -> Vec<u8> {
    let mut m = r2r::sensor_msgs::msg::Image {
        width: w,
        height: h,
        step: 3 * w,
        encoding: "rgb8".into(),
        data: (0..3 * w * h).map(|i| (i % 251) as u8).collect(),
        ..Default::default()
    };
    m.header.stamp.sec = 1_700_000_000;
    m.header.stamp.nanosec = 123;
    m.header.frame_id = "camera_color_optical_frame".into();
    m.to_serialized_bytes().expect("serialize Image")
}

fn joint_state_cdr(n: usize) -> Vec<u8> {
    let mut m = r2r::sensor_msgs::msg::JointState {
        name: (0..n).map(|i| format!("joint_{i}")).collect(),
        position: (0..n).map(|i| i as f64 * 0.1).collect(),
        velocity: vec![0.0; n],
        effort: vec![0.0; n],
        ..Default::default()
    };
    m.header.stamp.sec = 1_700_000_000;
    m.to_serialized_bytes().expect("serialize JointState")
}

fn decoding(c: &mut Criterion) {
    decode::warm_up();
    let img = image_cdr(64, 64);
    let js = joint_state_cdr(6);
    let mut g = c.benchmark_group("decode");
    g.bench_function("image_64x64_stamp", |b| {
        b.iter(|| decode::header_stamp(black_box(&img)))
    });
    g.bench_function("image_64x64_stamp_rmw", |b| {
        b.iter(|| r2r::std_msgs::msg::Header::from_serialized_bytes(black_box(&img)))
    });
    g.bench_function("image_64x64_whole", |b| {
        b.iter(|| decode::image(MessageKind::Image, black_box(&img)))
    });
    g.bench_function("image_64x64_whole_rmw", |b| {
        b.iter(|| r2r::sensor_msgs::msg::Image::from_serialized_bytes(black_box(&img)))
    });
    let img_vga = image_cdr(640, 480);
    g.bench_function("image_640x480_whole", |b| {
        b.iter(|| decode::image(MessageKind::Image, black_box(&img_vga)))
    });
    g.bench_function("image_640x480_whole_rmw", |b| {
        b.iter(|| r2r::sensor_msgs::msg::Image::from_serialized_bytes(black_box(&img_vga)))
    });
    g.bench_function("joint_state_6", |b| {
        b.iter(|| decode::joint_state(black_box(&js)))
    });
    g.bench_function("joint_state_6_rmw", |b| {
        b.iter(|| r2r::sensor_msgs::msg::JointState::from_serialized_bytes(black_box(&js)))
    });
    g.finish();
}

criterion_group!(benches, decoding);
criterion_main!(benches);
