"""What PVE reads back for what the collection writes, and comparison as PVE normalises (pure)."""
from ansible_collections.shadownet.proxmox.plugins.module_utils import meta as M
from ansible_collections.shadownet.proxmox.plugins.module_utils import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils import readback as R
from ansible_collections.shadownet.proxmox.plugins.module_utils import vm as V


def test_description_loses_trailing_whitespace_only():
    # parse_vm_config: s/\s+$// on the joined comment lines; inner blank lines and leading text stay.
    assert R.description('notes\n\n<!-- x -->\n') == 'notes\n\n<!-- x -->'
    assert R.description('a  \n\nb \t\r\n\n') == 'a  \n\nb'
    assert R.description('\n\nlead') == '\n\nlead'
    assert R.description('\n\n') == R.description('') == R.description(None) == R.description('0') == ''
    assert R.same('description', 'x', 'x\n') and R.same('description', None, '\n')
    assert R.differs('description', 'x', 'y')


def test_tags_compare_as_a_case_insensitive_set():
    assert R.same('tags', 'shadownet;sn-shop;web', ['Web', 'shadownet', 'sn-shop', 'web'])
    assert R.same('tags', 'b,a c', 'a;b;c')
    assert R.differs('tags', 'a;b', 'a')
    assert R.same('tags', None, set()) and R.same('tags', '', None)
    # What is written is what PVE's default tag-style stores (get_unique_tags).
    assert R.stored('tags', 'Web;shadownet web') == 'shadownet;web'
    assert propstr.format_tags({'sn-Shop', 'shadownet', 'sn-shop'}) == 'shadownet;sn-shop'


def test_typed_values_compare_as_pve_types_them():
    assert R.same('onboot', 1, 'true') and R.same('onboot', 0, False) and R.differs('onboot', 1, '0')
    assert R.same('cores', 4, '4') and R.differs('cores', 4, 2)
    assert R.same('memory', '2048', 2048) and R.same('memory', 'current=2048', '2048')
    assert R.same('startup', 'order=1,up=30', 'up=30,order=1')
    assert R.same('hookscript', 'local:snippets/h.py', 'local:snippets/h.py')
    assert R.same('balloon', None, None) and R.differs('balloon', None, 0)


def test_nets_compare_as_print_net_prints_them():
    current = 'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,link_down=0'
    assert R.same('net0', current, 'virtio=bc:24:11:aa:bb:cc,firewall=true,bridge=vmbr0')
    assert R.differs('net0', current, 'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,link_down=1')
    assert R.differs('net0', current, 'virtio=BC:24:11:AA:BB:CD,bridge=vmbr0,firewall=1')


def test_meta_description_as_pve_reads_it_back_is_unchanged():
    meta = {'v': 1, 'role': 'primary'}
    written = M.render_description('notes', meta)
    assert written == R.description(written)  # nothing for PVE to strip
    stored = R.description(written + '\n\n')  # an older run wrote a trailing newline
    new, merged, changed = M.merge_description(stored, meta)
    assert not changed and merged == meta
    assert M.merge_description(stored, {'index': 2})[2]


def test_a_converged_vm_as_pve_reads_it_back_needs_no_change():
    spec = V.VmSpec('shop-web-1', cores=2, memory=2048, nets=[{'bridge': 'vmbr0', 'model': 'virtio', 'link_down': False}],
                    tags=['shadownet', 'sn-shop', 'Web'], meta={'v': 1, 'role': 'primary'}, description=None)
    cfg = {'cores': 2, 'memory': '2048', 'net0': 'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0',
           'tags': 'shadownet;sn-shop;web', 'description': R.description(M.render_description('', spec.meta) + '\n')}
    assert V.desired_config_changes(spec, cfg) == ({}, [])
    plain = V.VmSpec('x', description='hand written\n')
    assert V.desired_config_changes(plain, {'description': 'hand written'}) == ({}, [])
    changes, dummy = V.desired_config_changes(plain, {'description': 'other'})
    assert changes == {'description': 'hand written'}


def test_a_restored_shadow_as_pve_reads_it_back_needs_no_change():
    from ansible_collections.shadownet.proxmox.plugins.module_utils import refresh
    identity = dict(name='shop-web-shadow', nets={'net0': 'virtio=bc:24:11:aa:bb:cc,bridge=vmbr1,firewall=true'},
                    tags='sn-shadow;Shadownet', onboot='true', startup='up=30,order=2', cores='1', memory=1024,
                    balloon='0', hookscript='local:snippets/h.py')
    # What GET config gives once PVE stored the restore (print_net, get_unique_tags, check_type, stripped text).
    cfg = {'name': 'shop-web-shadow', 'net0': 'virtio=bc:24:11:aa:bb:cc,bridge=vmbr1,firewall=1',
           'tags': 'shadownet;sn-shadow', 'onboot': 1, 'startup': 'up=30,order=2', 'cores': 1, 'memory': '1024',
           'balloon': 0, 'hookscript': 'local:snippets/h.py', 'description': 'restored'}
    assert refresh.restore_changes(identity, cfg, 'restored\n') == ({}, [])
    assert refresh.root_only_changes(identity, cfg) == ({}, [])
    assert refresh.restore_changes(identity, dict(cfg, onboot=0), 'restored')[0] == {'onboot': 'true'}
