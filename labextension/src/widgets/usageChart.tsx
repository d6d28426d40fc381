import * as React from 'react';

import { sparkline } from '../logic/usage';

/** GPU and CPU utilisation sparklines over the recent samples. */
export function UsageChart(props: { history: { gpu: number | null; cpu: number | null }[] }) {
  const w = 220;
  const h = 36;
  const gpu = props.history.map(x => x.gpu);
  const cpu = props.history.map(x => x.cpu);
  const any = gpu.some(v => v !== null) || cpu.some(v => v !== null);
  return (
    <svg
      className="jp-Walnut-chart"
      viewBox={`0 0 ${w} ${h}`}
      preserveAspectRatio="none"
      role="img"
      aria-label={any ? 'GPU and CPU utilisation over the last two minutes' : 'No utilisation data yet'}
    >
      <line x1="0" y1={h - 0.5} x2={w} y2={h - 0.5} className="jp-Walnut-chartAxis" />
      {any ? (
        <>
          <polyline points={sparkline(cpu, w, h - 1, 100)} className="jp-Walnut-chartCpu" />
          <polyline points={sparkline(gpu, w, h - 1, 100)} className="jp-Walnut-chartGpu" />
        </>
      ) : (
        <text x={w / 2} y={h / 2 + 4} textAnchor="middle" className="jp-Walnut-chartEmpty">
          usage n/a
        </text>
      )}
    </svg>
  );
}
