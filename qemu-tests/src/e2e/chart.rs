//! The PNG chart of `cargo xtask bench --vs-kdump`: panels of grouped bars drawn into an RGB
//! pixel buffer and encoded with the `png` crate.
//!
//! Labels use the tiny 5×7 bitmap font below: the machines this runs on have no font files
//! (and a font rasterizer would be a much larger dependency than the chart is worth).

/// One panel: a title and groups of bars (one value per series; `None` draws "FAIL").
pub struct Panel {
    pub title: String,
    pub groups: Vec<(String, Vec<Option<f64>>)>,
}

/// 5×7 glyphs, one byte per row, bit 4 = leftmost pixel. Lower case is drawn as upper case;
/// anything else as a box.
const FONT: &[(char, [u8; 7])] = &[
    ('0', [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e]),
    ('1', [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e]),
    ('2', [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f]),
    ('3', [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e]),
    ('4', [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02]),
    ('5', [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e]),
    ('6', [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e]),
    ('7', [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08]),
    ('8', [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e]),
    ('9', [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c]),
    ('A', [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11]),
    ('B', [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e]),
    ('C', [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e]),
    ('D', [0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c]),
    ('E', [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f]),
    ('F', [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10]),
    ('G', [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f]),
    ('H', [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11]),
    ('I', [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e]),
    ('J', [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c]),
    ('K', [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11]),
    ('L', [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f]),
    ('M', [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11]),
    ('N', [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11]),
    ('O', [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e]),
    ('P', [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10]),
    ('Q', [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d]),
    ('R', [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11]),
    ('S', [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e]),
    ('T', [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04]),
    ('U', [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e]),
    ('V', [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04]),
    ('W', [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a]),
    ('X', [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11]),
    ('Y', [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04]),
    ('Z', [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f]),
    (' ', [0; 7]),
    ('.', [0, 0, 0, 0, 0, 0x0c, 0x0c]),
    (',', [0, 0, 0, 0, 0x0c, 0x04, 0x08]),
    ('-', [0, 0, 0, 0x1f, 0, 0, 0]),
    ('/', [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0]),
    (':', [0, 0x0c, 0x0c, 0, 0x0c, 0x0c, 0]),
    ('(', [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02]),
    (')', [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08]),
    ('=', [0, 0, 0x1f, 0, 0x1f, 0, 0]),
    ('%', [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03]),
    ('<', [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02]),
    ('>', [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08]),
];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

const BLACK: [u8; 3] = [0x20, 0x20, 0x20];
const GREY: [u8; 3] = [0xb0, 0xb0, 0xb0];
const RED: [u8; 3] = [0xc0, 0x20, 0x20];

impl Canvas {
    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y.max(0)..(y + h).min(self.h as i64) {
            for xx in x.max(0)..(x + w).min(self.w as i64) {
                let i = (yy as usize * self.w + xx as usize) * 3;
                self.px[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    /// Text at scale `s` (glyph cell 6s × 8s); returns its width.
    fn text(&mut self, x: i64, y: i64, s: i64, t: &str, c: [u8; 3]) -> i64 {
        for (n, ch) in t.chars().enumerate() {
            let up = ch.to_ascii_uppercase();
            let g = FONT
                .iter()
                .find(|(k, _)| *k == up)
                .map(|(_, g)| *g)
                .unwrap_or([0x1f, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1f]);
            let ox = x + n as i64 * 6 * s;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.rect(ox + col * s, y + row as i64 * s, s, s, c);
                    }
                }
            }
        }
        text_width(t, s)
    }
}

fn text_width(t: &str, s: i64) -> i64 {
    t.chars().count() as i64 * 6 * s - s
}

/// A value as a bar label: 3 significant digits or so.
pub fn short(v: f64) -> String {
    if v >= 100.0 || (v >= 1.0 && v.fract() == 0.0) {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Draw `panels` side by side under `title`, with a legend for `series` (name, colour), and
/// encode it as PNG.
pub fn render(
    title: &str,
    series: &[(&str, [u8; 3])],
    panels: &[Panel],
) -> Result<Vec<u8>, String> {
    let (panel_w, panel_h, top) = (300i64, 330i64, 70i64);
    let w = (panel_w * panels.len().max(1) as i64 + 20) as usize;
    let h = (top + panel_h + 20) as usize;
    let mut c = Canvas {
        w,
        h,
        px: vec![0xff; w * h * 3],
    };
    c.text(10, 10, 2, title, BLACK);
    let mut lx = 10;
    for (name, col) in series {
        c.rect(lx, 40, 14, 14, *col);
        lx += 20 + c.text(lx + 20, 41, 2, name, BLACK) + 24;
    }
    for (pi, p) in panels.iter().enumerate() {
        let x0 = 10 + pi as i64 * panel_w;
        let (plot_top, plot_bottom) = (top + 40, top + panel_h - 40);
        c.text(
            x0 + (panel_w - text_width(&p.title, 2)) / 2,
            top,
            2,
            &p.title,
            BLACK,
        );
        let max = p
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().flatten())
            .fold(0.0f64, |a, &b| a.max(b));
        let max = if max > 0.0 { max } else { 1.0 };
        c.rect(x0 + 10, plot_bottom, panel_w - 20, 2, BLACK);
        let groups = p.groups.len().max(1) as i64;
        let group_w = (panel_w - 20) / groups;
        for (gi, (label, vals)) in p.groups.iter().enumerate() {
            let gx = x0 + 10 + gi as i64 * group_w;
            let n = vals.len().max(1) as i64;
            let bar_w = ((group_w - 20) / n).min(50);
            let bars_x = gx + (group_w - bar_w * n) / 2;
            for (si, v) in vals.iter().enumerate() {
                let bx = bars_x + si as i64 * bar_w;
                let col = series.get(si).map(|s| s.1).unwrap_or(GREY);
                match v {
                    Some(v) => {
                        let bh = ((v / max) * (plot_bottom - plot_top) as f64)
                            .round()
                            .max(1.0) as i64;
                        c.rect(bx + 3, plot_bottom - bh, bar_w - 6, bh, col);
                        let t = short(*v);
                        c.text(
                            bx + (bar_w - text_width(&t, 1)) / 2,
                            plot_bottom - bh - 11,
                            1,
                            &t,
                            BLACK,
                        );
                    }
                    None => {
                        c.text(
                            bx + (bar_w - text_width("FAIL", 1)) / 2,
                            plot_bottom - 11,
                            1,
                            "FAIL",
                            RED,
                        );
                    }
                }
            }
            c.text(
                gx + (group_w - text_width(label, 2)) / 2,
                plot_bottom + 10,
                2,
                label,
                BLACK,
            );
        }
    }
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, w as u32, h as u32);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        let mut wr = e.write_header().map_err(|e| format!("png: {e}"))?;
        wr.write_image_data(&c.px)
            .map_err(|e| format!("png: {e}"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_a_png_of_the_expected_size() {
        let p = Panel {
            title: "dump MB".into(),
            groups: vec![("1 GiB".into(), vec![Some(30.0), None])],
        };
        let png = render(
            "t",
            &[("Linux", [0, 0, 200]), ("lifeboat", [200, 100, 0])],
            &[p],
        )
        .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width, height
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 320);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 420);
        assert_eq!(short(123.4), "123");
        assert_eq!(short(12.34), "12.3");
        assert_eq!(short(0.123), "0.12");
        assert_eq!(short(4.0), "4");
    }

    #[test]
    fn every_glyph_fits_five_columns() {
        for (ch, g) in FONT {
            assert!(g.iter().all(|r| *r < 0x20), "{ch}");
        }
    }
}
