//! Floats written as Python's `repr()` writes them, which is what
//! `json.dumps` sends: the walk from Python values to JSON
//! (`py_json`) must give the same bytes, and Rust's float formatting
//! spells exponents differently (`1e16`, not `1e+16`). No crate lays out
//! digits Python's way; zmij (serde_json's own float formatter) finds the
//! digits.

/// Writes a finite float as `float.__repr__` does: the shortest digits
/// that read back as the same float (zmij finds them, as Python's dtoa
/// does), laid out Python's way. Positional when the decimal point falls
/// within 16 digits left of the first digit and 3 zeros right of it
/// (`100.0`, `0.0001`), else with a signed exponent of at least two
/// digits (`1e+16`, `1.5e-05`); a positional number always has a `.`.
///
/// zmij's layout is the same but for two cases, which are rebuilt: it
/// writes `0.0000d` positionally (Python: `de-05`) and negative exponents
/// with one digit (`1.5e-7`, Python: `1.5e-07`).
pub(crate) fn write(out: &mut Vec<u8>, number: f64) {
    if write_few_decimals(out, number) {
        return;
    }
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format_finite(number).as_bytes();
    let unsigned = text.strip_prefix(b"-").unwrap_or(text);
    let exponent_digits = unsigned
        .iter()
        .position(|&b| b == b'e')
        .map(|at| unsigned.len() - at - 2);
    let same_as_python = match exponent_digits {
        Some(digits) => digits >= 2,
        None => !unsigned.starts_with(b"0.0000"),
    };
    if same_as_python {
        out.extend_from_slice(text);
        return;
    }
    if unsigned.len() < text.len() {
        out.push(b'-');
    }
    let (digits, point) = significant_digits(unsigned);
    // Python's exponent is that of d.ddd x 10^e.
    let exponent = point - 1;
    out.push(digits[0]);
    if digits.len() > 1 {
        out.push(b'.');
        out.extend_from_slice(&digits[1..]);
    }
    out.push(b'e');
    out.push(if exponent < 0 { b'-' } else { b'+' });
    if exponent.unsigned_abs() < 10 {
        out.push(b'0');
    }
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(exponent.unsigned_abs())
            .as_bytes(),
    );
}

/// The most digits after the point that [`write_few_decimals`] writes,
/// and 10 to that power.
const MAX_FEW_DECIMALS: usize = 4;
const FEW_DECIMALS_SCALE: u64 = 10_000;

/// Below this magnitude two numbers with at most [`MAX_FEW_DECIMALS`]
/// decimals are always more than an f64's spacing apart (2^36's spacing
/// is 2^-16, under 10^-4), so at most one such number reads back as a
/// given float.
const FEW_DECIMALS_BELOW: f64 = 68_719_476_736.0; // 2^36

/// Writes `number` when it is a decimal with at most
/// [`MAX_FEW_DECIMALS`] digits after the point, between 10^-4 and 2^36
/// in magnitude (prices, odds, percentages, counts): the common case,
/// written with one multiplication and one division instead of a
/// shortest-digits search. Returns false, writing nothing, for any other
/// number.
///
/// Exact: `m / 10^4` with both exact is rounded once, as reading the
/// text `m` x 10^-4 back is, so the test below holds exactly when that
/// text reads back as `number` (a number with fewer decimals is one with
/// four, ending in zeros). Below [`FEW_DECIMALS_BELOW`] no other text of
/// at most four decimals reads back as `number`, so the fewest digits,
/// which `repr()` writes, are these without their trailing zeros; in
/// these magnitudes Python lays them out positionally.
fn write_few_decimals(out: &mut Vec<u8>, number: f64) -> bool {
    #[allow(clippy::cast_precision_loss)]
    const SCALE: f64 = FEW_DECIMALS_SCALE as f64;
    let magnitude = number.abs();
    if !(0.0001..FEW_DECIMALS_BELOW).contains(&magnitude) {
        return false;
    }
    // The nearest integer, by truncation (one instruction each way, in
    // i64, where `round()` is a call and u64 takes several): below 2^50,
    // so exact in both types. Were it off by one at a tie, the test below
    // would only fail.
    #[allow(clippy::cast_possible_truncation)]
    let scaled = (magnitude * SCALE + 0.5) as i64;
    #[allow(clippy::cast_precision_loss)]
    if scaled as f64 / SCALE != magnitude {
        return false;
    }
    let scaled = scaled.unsigned_abs();
    if number < 0.0 {
        out.push(b'-');
    }
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(scaled / FEW_DECIMALS_SCALE).as_bytes());
    out.push(b'.');
    let mut fraction = scaled % FEW_DECIMALS_SCALE;
    if fraction == 0 {
        out.push(b'0');
        return true;
    }
    let mut decimals = MAX_FEW_DECIMALS;
    while fraction % 10 == 0 {
        fraction /= 10;
        decimals -= 1;
    }
    let fraction = digits.format(fraction).as_bytes();
    out.extend(std::iter::repeat_n(b'0', decimals - fraction.len()));
    out.extend_from_slice(fraction);
    true
}

/// The significant digits of zmij's text for a positive non-zero number
/// (`1.5e-7`, `1e+16`, `0.00001234`), without leading or trailing zeros,
/// and where the decimal point goes: the number is 0.DIGITS x 10^point.
fn significant_digits(text: &[u8]) -> (Vec<u8>, i32) {
    let (mantissa, exponent) = match text.iter().position(|&b| b == b'e') {
        Some(at) => (&text[..at], parse_exponent(&text[at + 1..])),
        None => (text, 0),
    };
    let integer_digits = mantissa
        .iter()
        .position(|&b| b == b'.')
        .unwrap_or(mantissa.len());
    let mut digits: Vec<u8> = mantissa.iter().copied().filter(|b| *b != b'.').collect();
    let leading_zeros = digits.iter().take_while(|&&b| b == b'0').count();
    digits.drain(..leading_zeros);
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    // usize to i32: zmij writes at most 24 characters.
    let point = integer_digits as i32 - leading_zeros as i32 + exponent;
    (digits, point)
}

/// zmij's exponent: a sign and decimal digits.
fn parse_exponent(text: &[u8]) -> i32 {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let magnitude = digits
        .iter()
        .fold(0i32, |acc, &d| acc * 10 + i32::from(d - b'0'));
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(number: f64) -> String {
        let mut out = Vec::new();
        write(&mut out, number);
        String::from_utf8(out).unwrap()
    }

    /// Expected values are what CPython's `repr()` prints for each.
    #[test]
    fn floats_are_written_as_python_repr_writes_them() {
        for (number, expected) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.85, "1.85"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000_012_34, "1.234e-05"),
            (-0.000_012_34, "-1.234e-05"),
            (1.5e-7, "1.5e-07"),
            (1e-10, "1e-10"),
            (2.5e-9, "2.5e-09"),
            (0.000_001, "1e-06"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.234_5e20, "1.2345e+20"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (123_456_789_012_345_680.0, "1.2345678901234568e+17"),
            (9_007_199_254_740_993.0, "9007199254740992.0"),
            (0.5, "0.5"),
            (-0.0005, "-0.0005"),
            (0.000_15, "0.00015"),
            (0.0105, "0.0105"),
            (12.0001, "12.0001"),
            (3.0, "3.0"),
            (1234.56, "1234.56"),
            (68_719_476_735.5, "68719476735.5"),
            (68_719_476_736.5, "68719476736.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.1 * 3.0, "3.3000000000000003"),
        ] {
            assert_eq!(repr(number), expected, "{number:e}");
        }
    }
}
