//! `report.html`: the chaos run on one self-contained page (inline SVG
//! drawn with `plotters`, no scripts, nothing fetched): the verdict, a
//! timeline of publishing with every fault marked, channels owned per node,
//! recovery per fault against its bound, and every check with its evidence.

use plotters::prelude::*;

use super::report::ChaosReport;
use super::schedule::FaultKind;

const WIDTH: u32 = 960;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A colour per fault kind (the same in every report).
fn kind_colour(kind: &str) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(228, 26, 28),
        RGBColor(55, 126, 184),
        RGBColor(77, 175, 74),
        RGBColor(152, 78, 163),
        RGBColor(255, 127, 0),
        RGBColor(166, 86, 40),
        RGBColor(247, 129, 191),
        RGBColor(120, 120, 120),
        RGBColor(0, 150, 150),
        RGBColor(200, 180, 0),
    ];
    let i = FaultKind::ALL
        .iter()
        .position(|k| k.name() == kind)
        .unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the report: {e}")
}

/// Videos made visible so far (a flat stretch is a stop), with every
/// fault as a shaded span.
fn timeline(r: &ChaosReport) -> Result<String, String> {
    let end_ms = r.samples.last().map(|s| s.t_ms).unwrap_or(0).max(1);
    let top = r.samples.last().map(|s| s.published()).unwrap_or(1).max(1) as f64 * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption("Videos published so far; faults shaded", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end_ms as f64 / 1000.0, 0f64..top)
            .map_err(err)?;
        c.configure_mesh().x_desc("seconds").draw().map_err(err)?;
        let mut seen = std::collections::BTreeSet::new();
        for f in &r.faults {
            let a = f.started_ms as f64 / 1000.0;
            let b = f.ended_ms.unwrap_or(end_ms) as f64 / 1000.0;
            let col = kind_colour(f.kind);
            let drawn = c
                .draw_series(std::iter::once(Rectangle::new(
                    [(a, 0.0), (b, top)],
                    col.mix(0.25).filled(),
                )))
                .map_err(err)?;
            if seen.insert(f.kind) {
                drawn.label(f.kind).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], col.filled())
                });
            }
        }
        let pts = r
            .samples
            .iter()
            .map(|s| (s.t_ms as f64 / 1000.0, s.published() as f64));
        c.draw_series(LineSeries::new(pts, BLACK.stroke_width(2)))
            .map_err(err)?;
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One line per node over the run: `value` of a sample for node `i`
/// (`None`: no point there, a gap).
fn per_node_lines(
    r: &ChaosReport,
    node_names: &[String],
    caption: &str,
    top: f64,
    value: impl Fn(&super::monitor::Sample, usize) -> Option<f64>,
) -> Result<String, String> {
    let end_ms = r.samples.last().map(|s| s.t_ms).unwrap_or(0).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 280)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..end_ms as f64 / 1000.0, 0f64..top)
            .map_err(err)?;
        c.configure_mesh().x_desc("seconds").draw().map_err(err)?;
        for (i, name) in node_names.iter().enumerate() {
            let col = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = r
                .samples
                .iter()
                .filter_map(|s| Some((s.t_ms as f64 / 1000.0, value(s, i)?)))
                .collect();
            c.draw_series(LineSeries::new(pts, col.stroke_width(2)))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 12, y)], col.stroke_width(2))
                });
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Channels owned by each node over time (gaps: the store did not answer).
fn owners(r: &ChaosReport, node_names: &[String]) -> Result<String, String> {
    let top = (r.channels as f64 * 0.6).max(4.0);
    per_node_lines(r, node_names, "Channels owned per node", top, |s, i| {
        let o = s.owners.as_ref()?;
        let n = o
            .iter()
            .filter(|x| x.is_some_and(|(n, _)| n as usize == i))
            .count();
        Some(n as f64)
    })
}

/// Videos made visible in each minute of the run (the rate behind the
/// timeline's curve), with the faults shaded behind the bars.
fn per_minute(r: &ChaosReport) -> Result<String, String> {
    let end_ms = r.samples.last().map(|s| s.t_ms).unwrap_or(0).max(1);
    // Minutes for a long run; ten seconds for a short one (one bar would
    // say nothing).
    let (bin_ms, unit) = if end_ms >= 5 * 60_000 {
        (60_000, "minute")
    } else {
        (10_000, "10 s")
    };
    let bins = end_ms.div_ceil(bin_ms).max(1);
    let mut before = 0usize;
    let counts: Vec<usize> = (0..bins)
        .map(|m| {
            let upto = r
                .samples
                .iter()
                .take_while(|s| s.t_ms < (m + 1) * bin_ms)
                .last()
                .map(|s| s.published())
                .unwrap_or(before);
            let n = upto.saturating_sub(before);
            before = upto;
            n
        })
        .collect();
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    let secs = |ms: u64| ms as f64 / 1000.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 240)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                format!("Videos published per {unit}; faults shaded"),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..secs(bins * bin_ms), 0f64..top)
            .map_err(err)?;
        c.configure_mesh().x_desc("seconds").draw().map_err(err)?;
        for f in &r.faults {
            let (a, b) = (secs(f.started_ms), secs(f.ended_ms.unwrap_or(end_ms)));
            c.draw_series(std::iter::once(Rectangle::new(
                [(a, 0.0), (b, top)],
                kind_colour(f.kind).mix(0.2).filled(),
            )))
            .map_err(err)?;
        }
        let pad = secs(bin_ms) * 0.1;
        c.draw_series(counts.iter().enumerate().map(|(m, n)| {
            let x = secs(m as u64 * bin_ms);
            Rectangle::new(
                [(x + pad, 0.0), (x + secs(bin_ms) - pad, *n as f64)],
                RGBColor(60, 60, 60).filled(),
            )
        }))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Jobs waiting in each node's GPU queues over time, from the nodes' own
/// /metrics (a gap: the node did not answer, frozen or down).
fn queues(r: &ChaosReport, node_names: &[String]) -> Result<String, String> {
    let top = r
        .samples
        .iter()
        .flat_map(|s| s.queued_by_node.iter().flatten().copied())
        .max()
        .unwrap_or(0)
        .max(4) as f64
        * 1.1;
    per_node_lines(
        r,
        node_names,
        "Jobs waiting in each node's GPU queues",
        top,
        |s, i| Some((*s.queued_by_node.get(i)?)? as f64),
    )
}

/// Every recovery as a point over its fault kind (green within its bound,
/// red past it or never), each kind's bound as a bar across it.
fn recoveries(r: &ChaosReport) -> Result<String, String> {
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = r.recoveries.iter().map(|x| x.kind).collect();
        k.sort_unstable();
        k.dedup();
        k
    };
    let n = kinds.len().max(1);
    let top = r
        .recoveries
        .iter()
        .map(|x| x.recovery_ms.unwrap_or(x.bound_ms).max(x.bound_ms))
        .max()
        .unwrap_or(1_000) as f64
        / 1000.0
        * 1.1;
    let mut svg = String::new();
    {
        // Kinds down the side (their names fit there), seconds across.
        let height = 80 + 28 * n as u32;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Recovery by fault kind (s): points, bound as a bar",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(150)
            .build_cartesian_2d(0f64..top, (0..n).into_segmented())
            .map_err(err)?;
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => kinds.get(*i).map(|k| k.to_string()).unwrap_or_default(),
            _ => String::new(),
        };
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&label)
            .x_desc("seconds")
            .draw()
            .map_err(err)?;
        for (i, k) in kinds.iter().enumerate() {
            let of_kind: Vec<_> = r.recoveries.iter().filter(|x| x.kind == *k).collect();
            let bound = of_kind.iter().map(|x| x.bound_ms).max().unwrap_or(0) as f64 / 1000.0;
            c.draw_series(std::iter::once(PathElement::new(
                vec![
                    (bound, SegmentValue::Exact(i)),
                    (bound, SegmentValue::Exact(i + 1)),
                ],
                BLACK.stroke_width(2),
            )))
            .map_err(err)?;
            c.draw_series(of_kind.iter().map(|x| {
                let ok = x.recovery_ms.is_some_and(|ms| ms <= x.bound_ms);
                let v = x.recovery_ms.map(|ms| ms as f64 / 1000.0).unwrap_or(top);
                let col = if ok {
                    RGBColor(40, 150, 40)
                } else {
                    RGBColor(220, 20, 20)
                };
                Circle::new((v, SegmentValue::CenterOf(i)), 5, col.filled())
            }))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The checks, the faults and the recovery distributions as table rows.
fn tables(r: &ChaosReport) -> (String, String, String) {
    let mut rows = String::new();
    for c in &r.checks {
        rows.push_str(&format!(
            "<tr class={}><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            if c.ok { "ok" } else { "bad" },
            if c.ok { "pass" } else { "FAIL" },
            esc(&c.invariant),
            esc(&c.evidence)
        ));
    }
    let mut faults = String::new();
    for f in &r.faults {
        faults.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>\n",
            esc(f.kind),
            esc(&f.target),
            f.started_ms as f64 / 1000.0,
            f.ended_ms
                .map(|e| format!("{:.1}", (e - f.started_ms) as f64 / 1000.0))
                .unwrap_or_default(),
            esc(&match (&f.error, &f.outcome) {
                (Some(e), _) => format!("not caused: {e}"),
                (None, Some(o)) => o.clone(),
                (None, None) => String::new(),
            })
        ));
    }
    let mut dist = String::new();
    for (k, d) in &r.recovery_by_kind {
        dist.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(k),
            d.count,
            d.p50_ms,
            d.p99_ms,
            d.max_ms
        ));
    }
    (rows, faults, dist)
}

/// The whole page.
pub fn render(r: &ChaosReport) -> Result<String, String> {
    let bad = r.violations();
    let verdict = if bad == 0 {
        format!("<p class=ok>PASS: all {} checks held</p>", r.checks.len())
    } else {
        format!(
            "<p class=bad>FAIL: {bad} of {} checks violated</p>",
            r.checks.len()
        )
    };
    let (rows, faults, dist) = tables(r);
    Ok(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>reelfleet chaos, seed {seed}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 13px; }}
p.ok {{ color: #2a7a2a; font-size: 20px; font-weight: bold; }}
p.bad {{ color: #c01010; font-size: 20px; font-weight: bold; }}
tr.bad td {{ background: #fde0e0; }}
</style></head><body>
<h1>reelfleet chaos — seed {seed}</h1>
<p>{secs:.0} s, {nodes} nodes in {regions} regions, {channels} channels, lease {lease} ms.
{nf} faults; {published} videos published, {failed} failed; {changes} ownership changes.</p>
{verdict}
{timeline}
{per_minute}
{owners}
{queues}
{recoveries}
<h2>Recovery by fault kind (ms)</h2>
<table><tr><th>kind</th><th>count</th><th>p50</th><th>p99</th><th>max</th></tr>
{dist}</table>
<h2>Checks</h2>
<table><tr><th></th><th>invariant</th><th>evidence</th></tr>
{rows}</table>
<h2>Faults</h2>
<table><tr><th>kind</th><th>target</th><th>at (s)</th><th>for (s)</th><th>what came of it</th></tr>
{faults}</table>
</body></html>
"#,
        seed = r.seed,
        secs = r.duration_ms as f64 / 1000.0,
        nodes = r.nodes,
        regions = r.regions,
        channels = r.channels,
        lease = r.lease_ms,
        nf = r.faults.len(),
        published = r.audit.published,
        failed = r.audit.failed_by_reason.values().sum::<usize>(),
        changes = r.ownership_changes,
        timeline = timeline(r)?,
        per_minute = per_minute(r)?,
        owners = owners(r, &r.node_names)?,
        queues = queues(r, &r.node_names)?,
        recoveries = recoveries(r)?,
    ))
}
