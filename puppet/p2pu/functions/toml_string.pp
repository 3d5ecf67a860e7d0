# A TOML basic string: "..." with backslash, quote and control characters escaped.
function p2pu::toml_string(String $value) >> String {
  $escaped = $value.split('').map |String $c| {
    case $c {
      '\\':               { '\\\\' }
      '"':                { '\\"' }
      "\n":               { '\\n' }
      "\t":               { '\\t' }
      /\r/:               { '\\r' }
      /[\x00-\x1f\x7f]/: { fail("p2pu: control character in TOML string ${String($value, '%p')}") }
      default:            { $c }
    }
  }
  "\"${escaped.join('')}\""
}
