# A fleet node: joins two seeds, tags itself, uses the fleet's NTP server and a larger
# Transmission cache. Apply locally with `puppet apply examples/init.pp`, or submit the
# manifest to the fleet with `p2pu submit`.
class { 'p2pu':
  serf         => {
    'join' => ['10.0.0.1', '10.0.0.2:7946'],
    'tags' => { 'site' => 'kitchen' },
  },
  transmission => {
    'peer_port'  => 51500,
    'encryption' => 'prefer-clear',
    'extra'      => { 'cache-size-mb' => 16 },
  },
  agent        => {
    'seed_port'         => 6880,
    'max_payload_bytes' => 2147483648,
  },
  time         => { 'ntp' => ['10.0.0.1'] },
}
