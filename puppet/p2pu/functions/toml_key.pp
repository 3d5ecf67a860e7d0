# A TOML key: bare when it can be, quoted otherwise.
function p2pu::toml_key(String[1] $key) >> String {
  $key ? {
    /\A[A-Za-z0-9_-]+\z/ => $key,
    default              => p2pu::toml_string($key),
  }
}
