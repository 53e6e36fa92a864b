//! `--plot`: a PNG of the commanded actions against the recorded joint positions, one panel
//! per joint, so a person sees at a glance whether the policy tracks the demonstration.
//!
//! Drawn with plotters into a memory buffer and encoded with the `image` crate, then written
//! atomically like the other outputs. Text needs a system font (plotters' `ttf` feature
//! finds one through fontconfig); where none is found, the plot is drawn without text
//! (axes, lines and colours only: red = commanded, blue = recorded, black dots = chunk
//! switches) and a warning says so.

use std::path::Path;

use image::ImageEncoder;
use plotters::prelude::*;

use super::output::write_atomically;
use super::BagError;

/// Width of the plot in pixels.
pub const WIDTH: u32 = 1200;
/// Height of one joint's panel in pixels.
pub const PANEL_HEIGHT: u32 = 200;
/// Height of the title strip in pixels.
pub const TITLE_HEIGHT: u32 = 40;

/// The size of the PNG for `joints` joints: `(width, height)`.
pub fn plot_size(joints: usize) -> (u32, u32) {
    (WIDTH, TITLE_HEIGHT + PANEL_HEIGHT * joints.max(1) as u32)
}

/// What to draw. Times are seconds from the start of the bag.
pub struct PlotData<'a> {
    pub title: String,
    pub joint_names: &'a [String],
    /// (time, one value per joint).
    pub commanded: Vec<(f64, &'a [f64])>,
    /// (time, one value per joint; `None` where the message lacked the joint).
    pub recorded: Vec<(f64, Vec<Option<f64>>)>,
    /// Times of the ticks that switched to a new chunk (marked on the commanded line).
    pub switches: Vec<f64>,
}

const COMMANDED: RGBColor = RGBColor(214, 39, 40);
const RECORDED: RGBColor = RGBColor(31, 119, 180);
const SWITCH: RGBColor = RGBColor(0, 0, 0);

/// Draws `data` and writes it as a PNG to `path` (atomically).
pub fn write_plot(path: &Path, data: &PlotData) -> Result<(), BagError> {
    let (w, h) = plot_size(data.joint_names.len());
    let mut buf = vec![0u8; (w * h * 3) as usize];
    if let Err(with_text) = draw(&mut buf, (w, h), data, true) {
        log::warn!("plot: drawing text failed ({with_text}); drawing without text (red: commanded, blue: recorded)");
        buf.fill(0);
        draw(&mut buf, (w, h), data, false).map_err(|detail| BagError::Plot {
            path: path.to_path_buf(),
            detail,
        })?;
    }
    write_atomically(path, |out| {
        image::codecs::png::PngEncoder::new(out)
            .write_image(&buf, w, h, image::ExtendedColorType::Rgb8)
            .map_err(std::io::Error::other)
    })
}

fn draw(buf: &mut [u8], size: (u32, u32), data: &PlotData, text: bool) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (title, body) = root.split_vertically(TITLE_HEIGHT);
    if text {
        title
            .draw_text(
                &data.title,
                &("sans-serif", 20).into_font().color(&BLACK),
                (10, 10),
            )
            .map_err(|x| e(&x))?;
    }
    let t_end = data
        .commanded
        .iter()
        .map(|c| c.0)
        .chain(data.recorded.iter().map(|r| r.0))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let panels = body.split_evenly((data.joint_names.len().max(1), 1));
    for (j, (panel, name)) in panels.iter().zip(data.joint_names).enumerate() {
        let values = data
            .commanded
            .iter()
            .filter_map(|c| c.1.get(j).copied())
            .chain(
                data.recorded
                    .iter()
                    .filter_map(|r| r.1.get(j).copied().flatten()),
            )
            .filter(|v| v.is_finite());
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let (lo, hi) = if lo.is_finite() {
            (lo, hi)
        } else {
            (-1.0, 1.0)
        };
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let mut builder = ChartBuilder::on(panel);
        builder.margin(6).margin_right(16);
        if text {
            builder
                .caption(name, ("sans-serif", 15))
                .x_label_area_size(24)
                .y_label_area_size(56);
        } else {
            builder.x_label_area_size(4).y_label_area_size(4);
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..t_end, (lo - pad)..(hi + pad))
            .map_err(|x| e(&x))?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(WHITE.mix(0.0));
        if text {
            mesh.x_labels(10)
                .y_labels(5)
                .x_desc(if j + 1 == data.joint_names.len() {
                    "bag time (s)"
                } else {
                    ""
                });
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|x| e(&x))?;
        let recorded = data
            .recorded
            .iter()
            .filter_map(|(t, v)| v.get(j).copied().flatten().map(|v| (*t, v)));
        let series = chart
            .draw_series(LineSeries::new(recorded, RECORDED.stroke_width(2)))
            .map_err(|x| e(&x))?;
        series
            .label("recorded position")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RECORDED.stroke_width(2)));
        let commanded = data
            .commanded
            .iter()
            .filter_map(|(t, v)| v.get(j).map(|v| (*t, *v)));
        let series = chart
            .draw_series(LineSeries::new(commanded, COMMANDED.stroke_width(2)))
            .map_err(|x| e(&x))?;
        series.label("commanded action").legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], COMMANDED.stroke_width(2))
        });
        // Chunk switches: a dot on the commanded value at each switch tick.
        let mut k = 0usize;
        let marks: Vec<(f64, f64)> = data
            .switches
            .iter()
            .filter_map(|t| {
                while k < data.commanded.len() && data.commanded[k].0 < *t {
                    k += 1;
                }
                data.commanded
                    .get(k)
                    .filter(|c| c.0 == *t)
                    .and_then(|c| c.1.get(j).map(|v| (*t, *v)))
            })
            .collect();
        let series = chart
            .draw_series(
                marks
                    .into_iter()
                    .map(|p| Circle::new(p, 3, SWITCH.filled())),
            )
            .map_err(|x| e(&x))?;
        series
            .label("chunk switch")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, SWITCH.filled()));
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(|x| e(&x))?;
        }
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
