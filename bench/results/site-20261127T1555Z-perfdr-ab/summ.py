import json, sys, statistics as st
# summ.py LABEL=FILE.json ... : per run and median per label
rows = {}
for a in sys.argv[1:]:
    lab, f = a.split('=', 1)
    j = json.load(open(f))
    r = {}
    for k in ('on_qd32', 'off_qd32', 'on_qd1', 'off_qd1'):
        r[k + '_iops'] = j[k]['iops']; r[k + '_p50'] = j[k]['p50_us']
        r[k + '_dr'] = j[k]['cpu']['dr_us_per_write']; r[k + '_src'] = j[k]['cpu']['src_us_per_write']
    r['qd32_ratio'] = r['on_qd32_iops'] / r['off_qd32_iops']
    r['qd1_ratio'] = r['on_qd1_p50'] / r['off_qd1_p50']
    rows.setdefault(lab, []).append((f.split('/')[-1], r))
keys = ['on_qd32_dr', 'on_qd1_dr', 'on_qd32_src', 'on_qd32_iops', 'off_qd32_iops', 'qd32_ratio', 'on_qd1_p50', 'off_qd1_p50', 'qd1_ratio']
print('| run | ' + ' | '.join(keys) + ' |')
for lab, lst in rows.items():
    for f, r in lst:
        print('| %s %s | ' % (lab, f) + ' | '.join('%.2f' % r[k] for k in keys) + ' |')
    print('| **%s median (%d)** | ' % (lab, len(lst)) + ' | '.join('%.2f' % st.median(r[k] for _, r in lst) for k in keys) + ' |')
