//! The dashboard's growth chart as SVG, drawn on the server: no script,
//! no library, and it prints. The numbers are also given as text beside it.

use std::fmt::Write;

use crate::domain::growth::GrowthDay;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
/// Room for the axis labels.
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 12.0;

/// An `<svg>` of the list's size per day, labelled for screen readers.
pub fn growth_svg(days: &[GrowthDay]) -> String {
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return String::new();
    };
    let highest = days.iter().map(|day| day.size).max().unwrap_or(0);
    let lowest = days.iter().map(|day| day.size).min().unwrap_or(0);
    // From zero, unless the line would be flat at the top of the chart.
    let floor = if lowest > highest / 2 {
        lowest - (highest - lowest).max(1)
    } else {
        0
    }
    .max(0);
    let ceiling = highest.max(floor + 1);
    let plot_width = WIDTH - LEFT - 8.0;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |index: usize| LEFT + plot_width * index as f64 / (days.len().max(2) - 1) as f64;
    let y =
        |size: i64| TOP + plot_height * (1.0 - (size - floor) as f64 / (ceiling - floor) as f64);
    let mut line = String::new();
    for (index, day) in days.iter().enumerate() {
        let command = if index == 0 { 'M' } else { 'L' };
        let _ = write!(line, "{command}{:.1},{:.1} ", x(index), y(day.size));
    }
    let baseline = TOP + plot_height;
    let area = format!(
        "{line}L{:.1},{baseline:.1} L{:.1},{baseline:.1} Z",
        x(days.len() - 1),
        x(0)
    );
    let summary = format!(
        "Confirmed subscribers over the last {} days: {} on {}, {} today.",
        days.len(),
        first.size,
        first.start.format("%-d %B"),
        last.size
    );
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-labelledby=\"growth-title\" preserveAspectRatio=\"none\">\
         <title id=\"growth-title\">{summary}</title>"
    );
    for size in [floor, ceiling] {
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d9dde3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{size}</text>",
            WIDTH - 8.0,
            LEFT - 6.0,
            y(size) + 4.0,
            y = y(size),
        );
    }
    let _ = write!(
        svg,
        "<path d=\"{area}\" fill=\"#dbe6fb\"/>\
         <path d=\"{line}\" fill=\"none\" stroke=\"#0b57d0\" stroke-width=\"2\" \
         vector-effect=\"non-scaling-stroke\"/>"
    );
    for (index, anchor) in [
        (0, "start"),
        (days.len() / 2, "middle"),
        (days.len() - 1, "end"),
    ] {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            x(index),
            HEIGHT - 6.0,
            days[index].start.format("%-d %b")
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn days(sizes: &[i64]) -> Vec<GrowthDay> {
        let start = chrono_tz::UTC
            .with_ymd_and_hms(2037, 1, 1, 0, 0, 0)
            .unwrap();
        sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| GrowthDay {
                start: start + chrono::Duration::days(index as i64),
                joined: 0,
                left: 0,
                size,
            })
            .collect()
    }

    #[test]
    fn the_chart_names_its_numbers_and_dates() {
        let svg = growth_svg(&days(&[10, 12, 15, 20]));
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("role=\"img\""));
        assert!(svg.contains("10 on 1 January, 20 today"), "{svg}");
        assert!(svg.contains(">4 Jan<"), "{svg}");
        assert_eq!(svg.matches("<path").count(), 2);
    }

    #[test]
    fn an_empty_or_flat_list_still_draws() {
        assert_eq!(growth_svg(&[]), "");
        let flat = growth_svg(&days(&[0, 0, 0]));
        assert!(!flat.contains("NaN"), "{flat}");
        let high = growth_svg(&days(&[1000, 1000, 1001]));
        assert!(!high.contains("NaN") && !high.contains("inf"), "{high}");
    }
}
