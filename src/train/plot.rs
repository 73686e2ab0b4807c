//! The training plot: mean training loss per epoch and, in a second panel below it, the
//! validation Dice per epoch, as a PNG.
//!
//! Drawn with plotters' bitmap backend into an RGB buffer, encoded with `image`'s PNG encoder
//! and written atomically. Text goes through plotters' `ab_glyph` renderer with the bundled
//! DejaVu Sans (the `dejavu` crate), so no system fonts or fontconfig are needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::run_state::EpochLog;
use crate::files::atomic::write_atomic;

/// Width and height of the plot in pixels.
pub const PLOT_SIZE: (u32, u32) = (900, 640);

const LOSS_COLOUR: RGBColor = RGBColor(31, 119, 180);
const DICE_COLOUR: RGBColor = RGBColor(214, 39, 40);
const POINT_COLOUR: RGBColor = RGBColor(44, 160, 44);

/// Writes the training plot of `history` to `path` (PNG, [`PLOT_SIZE`]), atomically.
///
/// The top panel shows the mean training loss per epoch; the bottom one the validation Dice of
/// the epochs that have one (it says "no validation" when none has). Non-finite losses (an
/// epoch whose steps were all skipped) are left out. An empty history gives empty panels.
pub fn write_training_plot(path: &Path, history: &[EpochLog]) -> Result<()> {
    let png = render_png(history)?;
    write_atomic(path, |w| Ok(w.write_all(&png)?))
}

/// The plot as PNG bytes.
fn render_png(history: &[EpochLog]) -> Result<Vec<u8>> {
    register_font()?;
    let (w, h) = PLOT_SIZE;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&root, history).map_err(|e| anyhow!("cannot draw the training plot: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("cannot draw the training plot: {e}"))?;
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png).write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)?;
    Ok(png)
}

/// Makes DejaVu Sans plotters' sans-serif font (once per process).
fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut failed = false;
    ONCE.call_once(|| {
        failed = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        )
        .is_err();
    });
    if failed {
        return Err(anyhow!("cannot load the bundled plot font"));
    }
    Ok(())
}

type DrawResult<T> = std::result::Result<
    T,
    DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>,
>;

fn draw(root: &DrawingArea<BitMapBackend<'_>, Shift>, history: &[EpochLog]) -> DrawResult<()> {
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 1));
    let epochs = epoch_range(history);

    let loss: Vec<(i64, f64)> = history
        .iter()
        .filter(|l| l.mean_loss.is_finite())
        .map(|l| (number(l), l.mean_loss))
        .collect();
    panel(
        &panels[0],
        "training loss (mean per epoch)",
        "loss",
        epochs.clone(),
        &[("", &loss, LOSS_COLOUR)],
    )?;

    let dice: Vec<(i64, f64)> = history
        .iter()
        .filter_map(|l| l.val_dice.filter(|d| d.is_finite()).map(|d| (number(l), d)))
        .collect();
    let point_dice: Vec<(i64, f64)> = history
        .iter()
        .filter_map(|l| {
            l.val_point_dice
                .filter(|d| d.is_finite())
                .map(|d| (number(l), d))
        })
        .collect();
    let caption = if dice.is_empty() {
        "validation Dice (no validation)"
    } else {
        "validation Dice"
    };
    let mut series = vec![("box prompts", &dice, DICE_COLOUR)];
    if !point_dice.is_empty() {
        series.push(("one point", &point_dice, POINT_COLOUR));
    }
    panel(&panels[1], caption, "Dice (%)", epochs, &series)
}

/// An epoch's number as the progress log prints it (from 1).
fn number(l: &EpochLog) -> i64 {
    l.epoch as i64 + 1
}

/// The x range: the epochs of the history (at least one epoch wide).
fn epoch_range(history: &[EpochLog]) -> std::ops::Range<i64> {
    let lo = history.iter().map(number).min().unwrap_or(1);
    let hi = history.iter().map(number).max().unwrap_or(2);
    lo..hi.max(lo + 1)
}

/// A y range around `values` with 5% margins (0..1 for none; a flat series gets ±0.5 or ±5%).
fn value_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.05
    } else {
        (hi.abs() * 0.05).max(0.5)
    };
    (lo - pad)..(hi + pad)
}

/// One line of a panel: its legend label, its `(epoch, value)` points and its colour.
type Series<'a> = (&'a str, &'a Vec<(i64, f64)>, RGBColor);

/// A panel with one line per series; a legend when there are several.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    epochs: std::ops::Range<i64>,
    series: &[Series],
) -> DrawResult<()> {
    let ys = value_range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let x_labels = (epochs.end - epochs.start + 1).clamp(2, 12) as usize;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(epochs, ys)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(x_labels)
        .y_labels(6)
        .label_style(("sans-serif", 14))
        .draw()?;
    for &(label, points, colour) in series {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(value_range(std::iter::empty()), 0.0..1.0);
        let r = value_range([1.0, 3.0].into_iter());
        assert!((r.start - 0.9).abs() < 1e-12 && (r.end - 3.1).abs() < 1e-12);
        assert_eq!(value_range(std::iter::once(0.0)), -0.5..0.5);
        assert_eq!(epoch_range(&[]), 1..2);
    }
}
