//! The I/O map per tick: one message from each source, the policy inputs assembled, the
//! action split into the channels' published values. Today's single-topic wiring (the flat
//! parameters' map: one 14-joint `JointState`, one 14-value channel) against a bimanual map
//! (two 6-joint `JointState`s, two grippers as `Float64MultiArray` in other units, four
//! channels with scale / offset), measured in the same run.
//!
//! `cargo bench --no-default-features --bench io_map`
//! Target: the bimanual map adds at most 5 us per tick over the flat map.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use policy_node::iomap::{InputMessage, InputType, Inputs, IoMap, OutputType, Outputs};

fn joints(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}joint{i}")).collect()
}

fn js(names: &[String]) -> InputMessage {
    InputMessage::JointState {
        name: names.to_vec(),
        position: (0..names.len()).map(|i| 0.1 * i as f64).collect(),
        velocity: vec![],
        effort: vec![],
    }
}

const BIMANUAL: &str = r"
inputs:
  observation.state:
    - {topic: /left/joint_states, type: sensor_msgs/msg/JointState, select: [position.left_joint0, position.left_joint1, position.left_joint2, position.left_joint3, position.left_joint4, position.left_joint5]}
    - {topic: /left/gripper, type: std_msgs/msg/Float64MultiArray, select: [data.0], scale: 0.001}
    - {topic: /right/joint_states, type: sensor_msgs/msg/JointState, select: [position.right_joint0, position.right_joint1, position.right_joint2, position.right_joint3, position.right_joint4, position.right_joint5]}
    - {topic: /right/gripper, type: std_msgs/msg/Float64MultiArray, select: [data.0], scale: 0.001}
outputs:
  - {topic: /left_arm/commands, type: std_msgs/msg/Float64MultiArray, action: [0, 1, 2, 3, 4, 5]}
  - {topic: /left_gripper/commands, type: std_msgs/msg/Float64MultiArray, action: [6], scale: 1000.0}
  - {topic: /right_arm/commands, type: std_msgs/msg/Float64MultiArray, action: [7, 8, 9, 10, 11, 12]}
  - {topic: /right_gripper/commands, type: std_msgs/msg/Float64MultiArray, action: [13], scale: 1000.0, offset: 0.5}
";

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("io_map_tick");
    let action: Vec<f64> = (0..14).map(|i| 0.01 * i as f64).collect();

    // Today's wiring: one JointState of 14 joints, one channel.
    let names = joints("", 14);
    let flat = IoMap::from_flat(
        "state",
        &names,
        "joint_states",
        &[],
        "joint_commands",
        OutputType::Float64MultiArray,
    );
    let mut inputs = Inputs::new(&flat.inputs);
    let outputs = Outputs::new(&flat);
    let msg = js(&names);
    g.bench_function("flat_1_source_1_channel", |b| {
        b.iter(|| {
            inputs.on_message(0, 1, black_box(&msg)).unwrap();
            let state = inputs.feature_values(0).unwrap();
            black_box(state);
            black_box(outputs.encode(black_box(&action)))
        })
    });

    // Two arms and two grippers: four sources, four channels.
    let map = IoMap::parse(BIMANUAL).unwrap();
    let mut inputs = Inputs::new(&map.inputs);
    let outputs = Outputs::new(&map);
    let msgs: Vec<InputMessage> = (0..inputs.source_count())
        .map(|i| match inputs.source(i).unwrap().1 {
            InputType::JointState => js(&joints(if i == 0 { "left_" } else { "right_" }, 7)),
            _ => InputMessage::Array(vec![25.0]),
        })
        .collect();
    g.bench_function("bimanual_4_sources_4_channels", |b| {
        b.iter(|| {
            for (i, m) in msgs.iter().enumerate() {
                inputs.on_message(i, 1, black_box(m)).unwrap();
            }
            let state = inputs.feature_values(0).unwrap();
            black_box(state);
            let published = outputs.encode(black_box(&action));
            for (c, v) in outputs.split(&published) {
                black_box((c, v));
            }
            published
        })
    });
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
