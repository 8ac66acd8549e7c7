/**
 * How the sidebar writes numbers.
 *
 * Privacy budgets are written exactly as the ipywidgets meter (`rds_kernel/jupyter/meter.py`)
 * and the CLI write them: ε with Python's `format(x, ".4g")`, δ with `format(x, ".3g")`.
 * `formatG` is Python's `g` presentation type, rule for rule, so `9.01e-06` reads the same in
 * the sidebar, the meter and the terminal (tests/sidebar/test_browser.py compares them).
 */

/** Significant digits of ε, as the meter's `.4g`. */
export const EPSILON_DIGITS = 4;
/** Significant digits of δ, as the meter's `.3g`. */
export const DELTA_DIGITS = 3;

/** ε as the meter writes it: `format(epsilon, ".4g")`. */
export function formatEpsilon(epsilon: number): string {
  return formatG(epsilon, EPSILON_DIGITS);
}

/** δ as the meter writes it: `format(delta, ".3g")`. */
export function formatDelta(delta: number): string {
  return formatG(delta, DELTA_DIGITS);
}

/**
 * Python's `format(value, f".{precision}g")` for a float.
 *
 * The value is rounded to `precision` significant digits, ties to even, on its exact binary
 * value (as Python does; `toPrecision` would round ties up). With `exp` the decimal exponent
 * of the rounded value, it is written in fixed point when -4 <= exp < precision and in
 * scientific notation otherwise (`e`, a sign, at least two exponent digits); trailing zeros
 * and a trailing decimal point are removed. NaN, infinities and zeros are `nan`, `inf`,
 * `-inf`, `0` and `-0`.
 */
export function formatG(value: number, precision: number): string {
  const digitsWanted = Math.max(1, Math.floor(precision));
  if (Number.isNaN(value)) {
    return 'nan';
  }
  const sign = value < 0 || Object.is(value, -0) ? '-' : '';
  const magnitude = Math.abs(value);
  if (magnitude === Infinity) {
    return `${sign}inf`;
  }
  if (magnitude === 0) {
    return `${sign}0`;
  }
  const [digits, exp] = significantDigits(magnitude, digitsWanted);
  if (exp >= -4 && exp < digitsWanted) {
    const padded = exp < 0 ? '0'.repeat(-exp) + digits : digits;
    const point = exp < 0 ? 1 : exp + 1;
    return sign + joinPoint(padded.slice(0, point), padded.slice(point));
  }
  const exponent = `${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return `${sign}${joinPoint(digits.slice(0, 1), digits.slice(1))}e${exponent}`;
}

/**
 * A mock value as table text: null is blank; integers as integers; other numbers with four
 * significant digits, never rounding away digits before the point (`27.35`, `1235`,
 * `0.0001235`) and without trailing zeros; strings and booleans as themselves.
 */
export function formatCell(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  if (typeof value === 'number') {
    if (Number.isInteger(value) || !Number.isFinite(value)) {
      return String(value);
    }
    const magnitude = Math.abs(value);
    const text =
      magnitude >= 1
        ? value.toFixed(Math.max(0, 4 - (Math.floor(Math.log10(magnitude)) + 1)))
        : value.toPrecision(4);
    return String(Number(text));
  }
  if (typeof value === 'string' || typeof value === 'boolean') {
    return String(value);
  }
  return JSON.stringify(value) ?? '';
}

/** `int.frac` without trailing zeros in `frac` (and without the point when nothing is left). */
function joinPoint(int: string, frac: string): string {
  const kept = frac.replace(/0+$/, '');
  return kept ? `${int}.${kept}` : int;
}

/**
 * `value` (> 0, finite) rounded to `count` significant digits, ties to even, computed on its
 * exact binary value: the digits (exactly `count` of them) and the decimal exponent of the
 * first one.
 */
function significantDigits(value: number, count: number): [string, number] {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, value);
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  // value = mantissa * 2^power exactly (subnormals have no implicit leading 1)
  const mantissa = biased === 0 ? fraction : fraction | (1n << 52n);
  const power = (biased === 0 ? 1 : biased) - 1075;
  const num = power >= 0 ? mantissa << BigInt(power) : mantissa;
  const den = power >= 0 ? 1n : 1n << BigInt(-power);
  const ten = (k: number) => 10n ** BigInt(k);
  // value >= 10^k, exactly
  const atLeast = (k: number) => (k >= 0 ? num >= den * ten(k) : num * ten(-k) >= den);
  let exp = Math.floor(Math.log10(value));
  while (!atLeast(exp)) {
    exp -= 1;
  }
  while (atLeast(exp + 1)) {
    exp += 1;
  }
  const shift = count - 1 - exp;
  const n = shift >= 0 ? num * ten(shift) : num;
  const d = shift >= 0 ? den : den * ten(-shift);
  let q = n / d;
  const twice = 2n * (n % d);
  if (twice > d || (twice === d && q % 2n === 1n)) {
    q += 1n;
  }
  if (q === ten(count)) {
    q /= 10n;
    exp += 1;
  }
  return [q.toString(), exp];
}
