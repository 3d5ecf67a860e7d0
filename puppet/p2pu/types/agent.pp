# The site.toml [agent] section: every key optional; a key left out takes p2pu's default.
# Meanings and defaults: /usr/share/doc/p2pu/site.example.toml.
type P2pu::Agent = Struct[{
  Optional['spool_dir']                    => P2pu::Path,
  Optional['state_dir']                    => P2pu::Path,
  Optional['trusted_keys_dir']             => P2pu::Path,
  Optional['signing_key']                  => P2pu::Path,
  Optional['archive_dir']                  => P2pu::Path,
  Optional['accept_legacy']                => Boolean,
  Optional['tracker_port']                 => P2pu::Port,
  Optional['seed_port']                    => P2pu::Port,
  Optional['serve_user']                   => Pattern[/\A[a-z_][a-z0-9_-]{0,31}\z/],
  Optional['max_payload_bytes']            => Integer[1],
  Optional['max_future_secs']              => Integer[0],
  Optional['catch_up_secs']                => Integer[1],
  Optional['silence_warning_secs']         => Integer[0],
  Optional['fetch_min_rate_bytes_per_sec'] => Integer[1024],
  Optional['fetch_rate_window_secs']       => Integer[5, 600],
  Optional['fetch_slack_secs']             => Integer[60, 604800],
  Optional['fleet_id']                     => Pattern[/\A[0-9a-f]{16}\z/],
  Optional['fleet_id_file']                => P2pu::Path,
  Optional['announcement_ttl_days']        => Integer[1, 36500],
  Optional['accept_v1']                    => Boolean,
}]
