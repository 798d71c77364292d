import json, sys, statistics as st
# summ.py LABEL=FILE.json ... : per run and median per label (perfdr2: source CPU, QD1 p50, RPO)
rows = {}
for a in sys.argv[1:]:
    lab, f = a.split('=', 1)
    j = json.load(open(f))
    r = {}
    for k in ('on_qd32', 'off_qd32', 'on_qd1', 'off_qd1'):
        r[k + '_iops'] = j[k]['iops']; r[k + '_p50'] = j[k]['p50_us']; r[k + '_p99'] = j[k]['p99_us']
        r[k + '_dr'] = j[k]['cpu']['dr_us_per_write']; r[k + '_src'] = j[k]['cpu']['src_us_per_write']
    r['qd32_ratio'] = r['on_qd32_iops'] / r['off_qd32_iops']
    r['qd1_ratio'] = r['on_qd1_p50'] / r['off_qd1_p50']
    r['qd1_src_extra'] = r['on_qd1_src'] - r['off_qd1_src']
    r['lag_p50'] = j['rpo']['p50_s']; r['lag_p99'] = j['rpo']['p99_s']
    rows.setdefault(lab, []).append((f.split('/')[-1], r))
keys = ['on_qd1_p50', 'off_qd1_p50', 'qd1_ratio', 'on_qd1_p99', 'on_qd1_src', 'off_qd1_src', 'qd1_src_extra',
        'on_qd1_dr', 'on_qd32_src', 'off_qd32_src', 'on_qd32_dr', 'qd32_ratio', 'lag_p50', 'lag_p99']
print('| run | ' + ' | '.join(keys) + ' |')
print('|' + ' --- |' * (len(keys) + 1))
for lab, lst in rows.items():
    for f, r in lst:
        print('| %s %s | ' % (lab, f) + ' | '.join('%.3g' % r[k] for k in keys) + ' |')
    print('| **%s median (%d)** | ' % (lab, len(lst)) + ' | '.join('%.3g' % st.median(r[k] for _, r in lst) for k in keys) + ' |')
