"""The guest agent as qemu-server drives it, for ShadowPve: availability checks and file-read over guest files.

fakepve answers agent commands with results of the right shape (file-read gives '' for any path). ShadowPve
follows qemu-server src/PVE/QemuServer/Agent.pm (assert_agent_available, agent_cmd, check_agent_error) and
src/PVE/API2/Qemu/Agent.pm (the file-read method): files put into a guest (`put_guest_file`) are read back with
`offset`, `count`, `decode`, `bytes-read` and `truncated` as PVE gives them; a missing file is the agent's error.
The privilege (VM.GuestAgent.FileRead or VM.GuestAgent.Unrestricted on /vms/{vmid}) is checked by fakepve from
PVE's API schema before this code runs.
"""

import base64

from fakepve import agent as guest_agent
from fakepve.model import PveError

__all__ = ['GuestAgentFiles', 'MAX_READ_SIZE']

# qemu-server src/PVE/API2/Qemu/Agent.pm: $MAX_READ_SIZE, the most file-read reads, and its 1 MiB chunks.
MAX_READ_SIZE = 16 * 1024 * 1024
READ_CHUNK = 1024 * 1024


class GuestAgentFiles(object):
    """Files in guests, and the agent's availability checks before every agent command."""

    def put_guest_file(self, vmid, path, content, agent_running=True):
        """Put (or, with content None, remove) a file in a guest; its agent runs unless agent_running is False."""
        vm = self._vm_by_id(int(vmid))
        if agent_running and vm.agent is None:
            vm.agent = {}
        files = (vm.agent if vm.agent is not None else {}).setdefault('files', {})
        if content is None:
            files.pop(path, None)
        else:
            files[path] = content.encode('utf-8') if isinstance(content, str) else bytes(content)
        return vm

    def stop_guest_agent(self, vmid):
        """The agent in the guest stops (guest-ping fails: "QEMU guest agent is not running")."""
        vm = self._vm_by_id(int(vmid))
        vm.agent = None

    def _vm_by_id(self, vmid):
        vm = self.vm(vmid)
        if vm is None:
            raise KeyError('no VM {0}'.format(vmid))
        return vm

    async def _agent_call(self, match, values):
        vm = self.find(values['node'], values['vmid'])
        command = match.template.rsplit('/', 1)[1]
        # qemu-server src/PVE/QemuServer/Agent.pm assert_agent_available (agent_cmd, before every command): the
        # config must have `agent` at all, then the VM must run, then the agent must answer guest-ping.
        if 'agent' not in vm.config:
            raise PveError(500, 'No QEMU guest agent configured')
        if vm.status != 'running':
            raise PveError(500, 'VM {0} is not running'.format(vm.vmid))
        if command != 'file-read' or vm.agent is None or vm.agent_hangs:
            return await super()._agent_call(match, values)
        guest_agent.record(vm, command, values)
        return self._file_read(vm, values)

    @staticmethod
    def _file_read(vm, values):
        """qemu-server src/PVE/API2/Qemu/Agent.pm file-read: guest-file-open (check_agent_error dies with the
        agent's message), seek to `offset`, read 1 MiB chunks until `count` bytes or EOF, close; the answer is
        {content, bytes-read} plus truncated=1 when EOF was not reached. QGA's guest-file-read sets eof only when a
        read came back short, so reading exactly the bytes left is still `truncated`."""
        path = values['file']
        data = (vm.agent.get('files') or {}).get(path)
        if data is None:
            # qemu-ga commands-posix.c qmp_guest_file_open: error_setg_errno "failed to open file '%s' (mode: '%s')".
            raise PveError(500, "Agent error: failed to open file '{0}' (mode: 'r'): No such file or "
                                'directory'.format(path))
        if isinstance(data, str):
            data = data.encode('utf-8')
        count = int(values.get('count') or MAX_READ_SIZE)
        offset = int(values.get('offset') or 0)
        decode = values.get('decode', 1) not in (0, '0', False)
        pos, read, eof, chunks = offset, 0, False, []
        while read < count and not eof:
            want = min(READ_CHUNK, count - read)
            chunk = data[pos:pos + want]
            pos += len(chunk)
            read += len(chunk)
            eof = len(chunk) < want
            chunks.append(chunk)
        # Perl's decode_base64 gives bytes, which the API's JSON encoder writes as Latin-1 characters; undecoded,
        # each 1 MiB chunk is its own base64 string (padding included), concatenated.
        content = b''.join(chunks).decode('latin-1') if decode else \
            ''.join(base64.b64encode(c).decode('ascii') for c in chunks)
        out = {'content': content, 'bytes-read': read}
        if not eof:
            out['truncated'] = 1
        return out
