"""What PVE reads back for what the collection writes, and comparison as PVE normalises (pure)."""
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import readback
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import vm as vm_utils


def test_description_loses_trailing_whitespace_only():
    # parse_vm_config: s/\s+$// on the joined comment lines; inner blank lines and leading text stay.
    assert readback.description('notes\n\n<!-- x -->\n') == 'notes\n\n<!-- x -->'
    assert readback.description('a  \n\nb \t\r\n\n') == 'a  \n\nb'
    assert readback.description('\n\nlead') == '\n\nlead'
    assert readback.description('\n\n') == readback.description('') == readback.description(None) == readback.description('0') == ''
    assert readback.same('description', 'x', 'x\n') and readback.same('description', None, '\n')
    assert readback.differs('description', 'x', 'y')


def test_tags_compare_as_a_case_insensitive_set():
    assert readback.same('tags', 'shadownet;sn-shop;web', ['Web', 'shadownet', 'sn-shop', 'web'])
    assert readback.same('tags', 'b,a c', 'a;b;c')
    assert readback.differs('tags', 'a;b', 'a')
    assert readback.same('tags', None, set()) and readback.same('tags', '', None)
    # What is written is what PVE's default tag-style stores (get_unique_tags).
    assert readback.stored('tags', 'Web;shadownet web') == 'shadownet;web'
    assert propstr.format_tags({'sn-Shop', 'shadownet', 'sn-shop'}) == 'shadownet;sn-shop'


def test_typed_values_compare_as_pve_types_them():
    assert readback.same('onboot', 1, 'true') and readback.same('onboot', 0, False) and readback.differs('onboot', 1, '0')
    assert readback.same('cores', 4, '4') and readback.differs('cores', 4, 2)
    assert readback.same('memory', '2048', 2048) and readback.same('memory', 'current=2048', '2048')
    assert readback.same('startup', 'order=1,up=30', 'up=30,order=1')
    assert readback.same('hookscript', 'local:snippets/h.py', 'local:snippets/h.py')
    assert readback.same('balloon', None, None) and readback.differs('balloon', None, 0)


def test_nets_compare_as_print_net_prints_them():
    current = 'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,link_down=0'
    assert readback.same('net0', current, 'virtio=bc:24:11:aa:bb:cc,firewall=true,bridge=vmbr0')
    assert readback.differs('net0', current, 'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,link_down=1')
    assert readback.differs('net0', current, 'virtio=BC:24:11:AA:BB:CD,bridge=vmbr0,firewall=1')


def test_meta_description_as_pve_reads_it_back_is_unchanged():
    meta = {'v': 1, 'role': 'primary'}
    written = meta_utils.render_description('notes', meta)
    assert written == readback.description(written)  # nothing for PVE to strip
    stored = readback.description(written + '\n\n')  # an older run wrote a trailing newline
    new, merged, changed = meta_utils.merge_description(stored, meta)
    assert not changed and merged == meta
    assert meta_utils.merge_description(stored, {'index': 2})[2]


def test_a_converged_vm_as_pve_reads_it_back_needs_no_change():
    spec = vm_utils.VmSpec('shop-web-1', cores=2, memory=2048, nets=[{'bridge': 'vmbr0', 'model': 'virtio', 'link_down': False}],
                           tags=['shadownet', 'sn-shop', 'Web'], meta={'v': 1, 'role': 'primary'}, description=None)
    cfg = {'cores': 2, 'memory': '2048', 'net0': 'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0',
           'tags': 'shadownet;sn-shop;web', 'description': readback.description(meta_utils.render_description('', spec.meta) + '\n')}
    assert vm_utils.desired_config_changes(spec, cfg) == ({}, [])
    plain = vm_utils.VmSpec('x', description='hand written\n')
    assert vm_utils.desired_config_changes(plain, {'description': 'hand written'}) == ({}, [])
    changes, dummy = vm_utils.desired_config_changes(plain, {'description': 'other'})
    assert changes == {'description': 'hand written'}


def test_a_restored_shadow_as_pve_reads_it_back_needs_no_change():
    from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import refresh as refresh_utils
    identity = dict(name='shop-web-shadow', nets={'net0': 'virtio=bc:24:11:aa:bb:cc,bridge=vmbr1,firewall=true'},
                    tags='sn-shadow;Shadownet', onboot='true', startup='up=30,order=2', cores='1', memory=1024,
                    balloon='0', hookscript='local:snippets/h.py')
    # What GET config gives once PVE stored the restore (print_net, get_unique_tags, check_type, stripped text).
    cfg = {'name': 'shop-web-shadow', 'net0': 'virtio=bc:24:11:aa:bb:cc,bridge=vmbr1,firewall=1',
           'tags': 'shadownet;sn-shadow', 'onboot': 1, 'startup': 'up=30,order=2', 'cores': 1, 'memory': '1024',
           'balloon': 0, 'hookscript': 'local:snippets/h.py', 'description': 'restored'}
    assert refresh_utils.restore_changes(identity, cfg, 'restored\n') == ({}, [])
    assert refresh_utils.root_only_changes(identity, cfg) == ({}, [])
    assert refresh_utils.restore_changes(identity, dict(cfg, onboot=0), 'restored')[0] == {'onboot': 'true'}
