//! The lab's two figures, as SVG: bytes over time per host, and the completion CDF with the
//! lower bound drawn in.

use std::path::Path;

use plotters::prelude::*;
use st_engine::lab::Timeline;

const SIZE: (u32, u32) = (900, 520);

fn err(e: impl std::fmt::Display) -> String {
    format!("cannot draw: {e}")
}

/// `progress.svg`: verified MiB of each fetcher over time.
pub fn progress(path: &Path, title: &str, hosts: &[(String, Timeline)]) -> Result<(), String> {
    let t_max = hosts
        .iter()
        .flat_map(|(_, t)| t.samples.last().map(|s| s.0))
        .fold(1.0f64, f64::max);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let y_max = hosts
        .iter()
        .flat_map(|(_, t)| t.total)
        .map(mib)
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max * 1.05, 0f64..y_max * 1.05)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the fetchers started")
        .y_desc("MiB verified")
        .draw()
        .map_err(err)?;
    for (i, (name, t)) in hosts.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                t.samples.iter().map(|&(x, b)| (x, mib(b))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// `completion.svg`: the fraction of fetchers complete over time, with the lower bound as a
/// vertical line.
pub fn completion(
    path: &Path,
    title: &str,
    hosts: usize,
    times: &[f64],
    bound: Option<f64>,
) -> Result<(), String> {
    let mut sorted: Vec<f64> = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let t_max = sorted
        .last()
        .copied()
        .unwrap_or(1.0)
        .max(bound.unwrap_or(0.0));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max * 1.1, 0f64..1.05f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the fetchers started")
        .y_desc("fraction of hosts complete")
        .draw()
        .map_err(err)?;
    // A step function: 0 until the first completion, k/N from the k-th on.
    let n = hosts.max(1) as f64;
    let mut steps = vec![(0.0, 0.0)];
    for (k, &t) in sorted.iter().enumerate() {
        steps.push((t, k as f64 / n));
        steps.push((t, (k + 1) as f64 / n));
    }
    if let Some(&(t, y)) = steps.last() {
        steps.push((t.max(t_max * 1.1), y));
    }
    chart
        .draw_series(LineSeries::new(steps, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("st fetchers")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
    if let Some(b) = bound {
        chart
            .draw_series(LineSeries::new(
                vec![(b, 0.0), (b, 1.05)],
                RED.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("lower bound {b:.2} s"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
