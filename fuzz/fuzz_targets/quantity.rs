//! Kubernetes quantities (`webhook::quantity`): any text parses or is refused without a panic,
//! and a parsed amount, written back in its own format or in decimal, parses to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_webhook::quantity::{Amount, Format};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((amount, format)) = Amount::parse_with_format(text) else {
        return;
    };
    for format in [format, Format::BinarySi, Format::DecimalSi] {
        let written = amount.to_quantity(format);
        assert_eq!(
            Amount::parse(&written),
            Ok(amount),
            "{text:?} was written as {written:?}"
        );
    }
    // The resource arithmetic on it may refuse (overflow, a zero ratio), never panic.
    let _ = amount.times(amount);
    let _ = amount.divided_by(amount);
});
