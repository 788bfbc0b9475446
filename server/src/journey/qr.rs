//! QR codes as SVG, and the printable sheet of a class's codes.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use super::designs::Design;

/// `data` as an SVG QR code (medium error correction: a creased printout still scans).
pub fn svg(data: &str, size: u32) -> Option<String> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(size, size)
            .quiet_zone(true)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

/// Text for HTML: the five characters that matter escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A4 sheet, 3 × 4 cards a page: each pupil's name, model, text, code and QR code, to cut out.
pub fn sheet(group: &str, designs: &[Design], expires: &str) -> String {
    let mut cards = String::new();
    for d in designs {
        let qr = svg(&d.code, 160).unwrap_or_default();
        cards.push_str(&format!(
            "<div class=\"card\"><div class=\"qr\">{qr}</div><p class=\"pupil\">{}</p>\
             <p class=\"design\">{} · « {} »</p><p class=\"code\">{}</p></div>\n",
            escape(d.pupil.as_deref().unwrap_or("")),
            escape(&d.model),
            escape(&d.text),
            escape(&d.code),
        ));
    }
    format!(
        "<!doctype html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\">\
         <title>Codes du groupe {group} — Fabrique</title><style>\
         @page {{ size: A4; margin: 10mm; }}\
         body {{ font-family: system-ui, sans-serif; margin: 0; color: #1d2a35; }}\
         h1 {{ font-size: 16pt; margin: 0 0 4mm; }} .note {{ margin: 0 0 6mm; font-size: 10pt; }}\
         .cards {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: 4mm; }}\
         .card {{ border: 1px dashed #888; padding: 3mm; text-align: center; break-inside: avoid; height: 62mm; }}\
         .qr svg {{ width: 36mm; height: 36mm; }} .pupil {{ font-weight: 700; margin: 1mm 0 0; }}\
         .design {{ margin: 0; font-size: 9pt; }} .code {{ font: 700 15pt ui-monospace, monospace; letter-spacing: 2px; margin: 1mm 0 0; }}\
         </style></head><body><h1>Fabrique mobile — groupe {group}</h1>\
         <p class=\"note\">Chaque élève scanne son code à la borne du camion pour lancer la fabrication de son support. \
         Codes valables jusqu'au {expires}.</p><div class=\"cards\">\n{cards}</div></body></html>\n",
        group = escape(group),
        expires = escape(expires),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qr_code_is_an_svg_and_text_is_escaped() {
        let image = svg("K7P4XQ", 200).unwrap();
        assert!(
            image.contains("<svg") && image.contains("</svg>"),
            "{image}"
        );
        assert_eq!(
            escape("<b>\"x\" & 'y'"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;"
        );
    }
}
