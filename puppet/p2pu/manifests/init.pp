# @summary Configures a p2pu node: writes site.toml and runs `p2pu init` when it changed.
#
# Each section parameter mirrors the site.toml section of the same name, key for key (see
# /usr/share/doc/p2pu/site.example.toml). A key left out is left out of site.toml too, so it
# takes p2pu's own default. `p2pu init` runs only when the file's content changed; it then
# re-renders the engine configs and restarts exactly the services whose files changed.
#
# @example Change the peer port of every node (submitted to the fleet with `p2pu submit`)
#   class { 'p2pu':
#     serf         => { 'join' => ['10.0.0.1'] },
#     transmission => { 'peer_port' => 51500 },
#   }
#
# @param node
#   [node]: name (default: the hostname), role ('node' or 'proxy').
# @param serf
#   [serf]: gossip (bind, advertise, join, encrypt, tags, rpc_addr, user_event_size_limit, ...).
# @param transmission
#   [transmission]: BitTorrent (rpc_port, peer_port, download_dir, encryption, extra, ...).
#   A Sensitive rpc_password makes the whole file Sensitive (no diffs in reports).
# @param puppet
#   [puppet]: how the agent runs Puppet (modulepath, apply_flags, state_root, timeout_secs).
# @param agent
#   [agent]: spool, state, keys, tracker and seed ports, serve_user, payload and time limits.
# @param nat
#   [nat]: the NAT client and proxy (enabled, proxy, port, stun_server, control_socket, ...).
# @param time
#   [time]: ntp and fallback_ntp servers for systemd-timesyncd.
# @param transfer
#   [transfer]: how large payloads move (mode: 'chain', or 'stripes' where built; stripes and fan_out: the stripes' shape).
# @param paths
#   [paths]: config_dir, systemd_dir, timesyncd_dir (unusual layouts, tests).
# @param config_file
#   Where site.toml goes.
# @param binary
#   The p2pu binary, as the exec runs it and the rendered units do.
# @param init_flags
#   More flags for `p2pu init` (e.g. ['--no-systemd'] where systemd is absent).
# @param manage_services
#   Keep the engines (serf, transmission-daemon) enabled and running; p2pu's own units are
#   left to `p2pu init`.
class p2pu (
  P2pu::Node $node = {},
  P2pu::Serf $serf = {},
  P2pu::Transmission $transmission = {},
  P2pu::Puppet $puppet = {},
  P2pu::Agent $agent = {},
  P2pu::Nat $nat = {},
  P2pu::Time $time = {},
  P2pu::Transfer $transfer = {},
  P2pu::Paths $paths = {},
  P2pu::Path $config_file = '/etc/p2pu/site.toml',
  P2pu::Path $binary = '/usr/bin/p2pu',
  Array[String[1]] $init_flags = [],
  Boolean $manage_services = true,
) {
  $password = $transmission['rpc_password']
  $plain_transmission = $password ? {
    Sensitive => $transmission + { 'rpc_password' => $password.unwrap },
    default   => $transmission,
  }
  $all = {
    'node'         => $node,
    'serf'         => $serf,
    'transmission' => $plain_transmission,
    'puppet'       => $puppet,
    'agent'        => $agent,
    'nat'          => $nat,
    'time'         => $time,
    'transfer'     => $transfer,
    'paths'        => $paths,
  }
  $sections = $all.filter |$name, $keys| { !$keys.empty }
  $text = epp('p2pu/site.toml.epp', { 'sections' => $sections })
  $content = $password ? {
    Sensitive => Sensitive($text),
    default   => $text,
  }

  $config_dir = $config_file.regsubst(/\/[^\/]*\z/, '')
  if $config_dir != '' and !defined(File[$config_dir]) {
    file { $config_dir:
      ensure => directory,
    }
  }
  file { $config_file:
    ensure  => file,
    mode    => '0600',
    content => $content,
  }

  exec { 'p2pu init':
    command     => shellquote([$binary, 'init', '--config', $config_file, '--binary', $binary] + $init_flags),
    refreshonly => true,
    subscribe   => File[$config_file],
    logoutput   => true,
  }

  # p2pu's own units are left to `p2pu init`, which enables and (re)starts them: this apply
  # usually runs inside p2pu-agent, whose restart (queued by init when its config changed)
  # waits for the apply to end, so a service resource starting it, or the NAT units ordered
  # after it, would wait for itself.
  if $manage_services {
    service { ['serf', 'transmission-daemon']:
      ensure  => running,
      enable  => true,
      require => Exec['p2pu init'],
    }
  }
}
