# p2pu's warm `puppet parser validate` (src/engines/warm_validator.rs starts it and asks it).
# Loads Puppet once (the ~0.5 s a cold `puppet parser validate` spends starting), then answers
# each connection on its socket: the client sends a manifest's absolute path and a newline; a
# forked child validates it as `puppet parser validate` does (the same face action, its errors
# logged the same way) and the server answers "<exit status>\n<output>". Answers "stale" and
# exits once Puppet's files changed (an upgrade), and exits after IDLE seconds unused or once
# its socket is gone (its directory was removed).
#
# ARGV: socket path, idle seconds, then Puppet's settings flags (as the cold command has them).
require 'socket'

sock_path = ARGV.shift
idle = Integer(ARGV.shift)
flags = ARGV.dup
File.umask(0o077)
# Detached from whoever started it: that `submit` exits at once and must not be its parent.
Process.daemon(true, true)

require 'puppet/util/command_line'
require 'puppet'
require 'puppet/face'
Puppet.initialize_settings(flags)
Puppet::ApplicationSupport.push_application_context(Puppet::Util::RunMode[:user])
Puppet.push_context(
  { current_environment: Puppet.lookup(:environments).get!(Puppet[:environment]) },
  'p2pu warm validator'
)
Puppet::Face[:parser, :current]
version_file = $LOADED_FEATURES.find { |f| f.end_with?('/puppet/version.rb') }
version_mtime = version_file && File.mtime(version_file)

server = UNIXServer.new(sock_path)
sock_ino = File.stat(sock_path).ino
$stdout.puts 'ready'
$stdout.flush

def gone?(path, ino)
  File.stat(path).ino != ino
rescue SystemCallError
  true
end

last_used = Time.now
loop do
  unless IO.select([server], nil, nil, 5)
    break if Time.now - last_used > idle || gone?(sock_path, sock_ino)
    next
  end
  client = server.accept
  last_used = Time.now
  begin
    path = IO.select([client], nil, nil, 5) && client.gets
    path = path&.chomp
    next if path.nil? || path.empty?
    if version_file && File.mtime(version_file) != version_mtime
      client.write("stale\n")
      break
    end
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      $stdout.reopen(writer)
      $stderr.reopen(writer)
      code = 0
      begin
        Puppet::Util::Log.newdestination(:console)
        errors = Puppet::Face[:parser, :current].validate(path)
        unless errors.empty?
          errors.each { |_, e| Puppet.log_exception(e) }
          code = 1
        end
      rescue Exception => e
        Puppet.log_exception(e)
        code = 1
      end
      $stdout.flush
      $stderr.flush
      exit!(code)
    end
    writer.close
    output = reader.read
    reader.close
    Process.wait(pid)
    client.write("#{$?.exitstatus || 1}\n#{output}")
  rescue SystemCallError, IOError
    # The client went away: nothing to answer.
  ensure
    client.close
  end
end
File.unlink(sock_path) unless gone?(sock_path, sock_ino)
