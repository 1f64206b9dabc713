//! The benches' plots: one line over labelled axes, as a standalone SVG file (no plotting
//! library, no fonts to install; any browser shows it).

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 48.0;
const TOP: f64 = 32.0;
const RIGHT: f64 = 16.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A round step for about `ticks` ticks over `span`.
fn step(span: f64, ticks: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

/// `points` (x, y) as a polyline, axes from zero to the largest value.
pub fn line(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)]) -> String {
    let max_x = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let max_y = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let (sx, sy) = (step(max_x, 6.0), step(max_y, 5.0));
    let (top_x, top_y) = ((max_x / sx).ceil() * sx, (max_y / sy).ceil() * sy);
    let px = |x: f64| LEFT + x / top_x * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - y / top_y * (H - BOTTOM - TOP);
    let mut out = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#);
    out.push_str(&format!(r#"<rect width="{W}" height="{H}" fill="white"/><text x="{}" y="18" text-anchor="middle" font-size="13">{}</text>"#, W / 2.0, esc(title)));
    let mut t = 0.0;
    while t <= top_x + 1e-9 {
        out.push_str(&format!(r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##, TOP, H - BOTTOM, H - BOTTOM + 14.0, fmt(t), x = px(t)));
        t += sx;
    }
    let mut t = 0.0;
    while t <= top_y + 1e-9 {
        out.push_str(&format!(r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##, LEFT, W - RIGHT, LEFT - 4.0, py(t) + 4.0, fmt(t), y = py(t)));
        t += sy;
    }
    out.push_str(&format!(r#"<line x1="{LEFT}" y1="{b}" x2="{}" y2="{b}" stroke="black"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="black"/>"#, W - RIGHT, b = H - BOTTOM));
    out.push_str(&format!(r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, (LEFT + W - RIGHT) / 2.0, H - 10.0, esc(x_label)));
    out.push_str(&format!(r#"<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"#, (TOP + H - BOTTOM) / 2.0, (TOP + H - BOTTOM) / 2.0, esc(y_label)));
    let pts: Vec<String> = points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
    out.push_str(&format!(r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/></svg>"##, pts.join(" ")));
    out.push('\n');
    out
}

fn fmt(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(step(100.0, 5.0), 20.0);
        assert_eq!(step(7.0, 6.0), 2.0);
        assert_eq!(step(0.0, 5.0), 1.0);
    }

    #[test]
    fn a_plot_is_one_svg_with_its_line_and_labels() {
        let s = line("a < b", "x", "y", &[(0.0, 0.0), (1.0, 5.0), (2.0, 3.0)]);
        assert!(s.starts_with("<svg ") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt; b") && s.contains("<polyline"));
        assert_eq!(s.matches("<polyline").count(), 1);
    }
}
