# The NAT rendezvous host: a fleet member that also runs `p2pu proxy` on UDP 3478.
class { 'p2pu':
  node => { 'role' => 'proxy' },
  nat  => {
    'port'            => 3478,
    'relay_rate_kbps' => 4096,
  },
}
