//! Client configs as QR codes, for the WireGuard phone apps: drawn in the terminal, or as PNG.

use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, EcLevel, QrCode};
use std::path::Path;

/// Why a config could not be drawn or saved as a QR code.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The text is more than the largest QR code holds.
    #[error("the text does not fit in a QR code: {0}")]
    TooLong(qrcode::types::QrError),
    /// The PNG file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The PNG file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The PNG encoder failed.
    #[error("cannot encode {path}: {source}")]
    Png {
        /// The PNG file.
        path: String,
        /// What the encoder said.
        source: png::EncodingError,
    },
}

/// Pixels per module in the PNG, and the quiet zone around the code, in modules.
const SCALE: usize = 8;
const QUIET: usize = 4;

fn encode(text: &str) -> Result<QrCode, QrError> {
    // Level M, as qrencode defaults to: a config fits easily and survives a smudged screen.
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(QrError::TooLong)
}

/// The code drawn with half blocks, light on dark, as terminals (dark by default) show it
/// scannably; two rows of modules per line of text.
pub fn terminal(text: &str) -> Result<String, QrError> {
    Ok(encode(text)?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Writes the code as a greyscale PNG, dark modules black on white.
pub fn write_png(text: &str, path: &Path) -> Result<(), QrError> {
    let code = encode(text)?;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (x, y) = ((i % width + QUIET) * SCALE, (i / width + QUIET) * SCALE);
        for row in y..y + SCALE {
            pixels[row * side + x..row * side + x + SCALE].fill(0);
        }
    }
    let shown = path.display().to_string();
    let mut bytes = Vec::new();
    {
        let side = u32::try_from(side).unwrap_or(u32::MAX);
        let mut encoder = png::Encoder::new(&mut bytes, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let png_error = |source| QrError::Png {
            path: shown.clone(),
            source,
        };
        let mut writer = encoder.write_header().map_err(png_error)?;
        writer.write_image_data(&pixels).map_err(png_error)?;
        writer.finish().map_err(png_error)?;
    }
    // The picture holds a private key: as private as the config itself.
    lab_daemon::files::write_atomic(path, &bytes, 0o600).map_err(|source| QrError::Write {
        path: shown,
        source,
    })
}
