// How many SMS segments a draft takes, and in which encoding: a mirror of
// server/sms/segments.py (tests/staff/test_segments.py checks that both agree on a table
// of cases). Pure; runs on every keystroke, so the composer needs no round trip.
//
// GSM-7 when every character is in the GSM 03.38 basic set or its extension table (an
// extension character takes two septets); 160 septets in one segment, 153 per segment
// when split, an escape pair never split. Otherwise UCS-2: 70 UTF-16 units, 67 when
// split; a character outside the BMP takes two units, never split.

const GSM7_BASIC = new Set(
  "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
  "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà");
const GSM7_EXTENSION = new Set("^{}\\[~]|€\f");

const SINGLE = { "GSM-7": 160, "UCS-2": 70 };
const PER_PART = { "GSM-7": 153, "UCS-2": 67 };

// {encoding, segments, units, per_segment}, as POST /api/sms/segments answers.
export function count(body) {
  const chars = [...body]; // code points, as Python iterates a str
  let encoding, costs;
  if (chars.every((ch) => GSM7_BASIC.has(ch) || GSM7_EXTENSION.has(ch))) {
    encoding = "GSM-7";
    costs = chars.map((ch) => (GSM7_EXTENSION.has(ch) ? 2 : 1));
  } else {
    encoding = "UCS-2";
    costs = chars.map((ch) => (ch.codePointAt(0) > 0xffff ? 2 : 1));
  }
  const units = costs.reduce((sum, cost) => sum + cost, 0);
  if (units <= SINGLE[encoding]) {
    return { encoding, segments: units ? 1 : 0, units, per_segment: SINGLE[encoding] };
  }
  const capacity = PER_PART[encoding];
  let segments = 1;
  let used = 0;
  for (const cost of costs) {
    if (used + cost > capacity) {
      segments += 1;
      used = 0;
    }
    used += cost;
  }
  return { encoding, segments, units, per_segment: capacity };
}

// "1 SMS segment · GSM-7"
export function describe(info) {
  return `${info.segments} SMS segment${info.segments === 1 ? "" : "s"} · ${info.encoding}`;
}
