import * as React from 'react';

import { bars, linePoints, niceMax, polylinePoints } from '../logic/charts';

interface IChartProps {
  values: number[];
  labels: string[];
  titles: string[];
  label: string;
  unit: string;
  testId: string;
  top?: number;
}

const W = 260;
const H = 70;
const PAD = { left: 4, bottom: 14, top: 10 };

/** Axis, top value and first/last labels, shared by both chart kinds. */
function Frame(props: { top: number; unit: string; labels: string[] }) {
  const { labels } = props;
  return (
    <>
      <line x1={PAD.left} y1={H - PAD.bottom + 0.5} x2={W} y2={H - PAD.bottom + 0.5} className="jp-Walnut-chartAxis" />
      <text x={PAD.left} y={8} className="jp-Walnut-chartLabel">
        {`${props.top} ${props.unit}`}
      </text>
      {labels.length > 0 && (
        <>
          <text x={PAD.left} y={H - 2} className="jp-Walnut-chartLabel">
            {labels[0]}
          </text>
          <text x={W} y={H - 2} textAnchor="end" className="jp-Walnut-chartLabel">
            {labels[labels.length - 1]}
          </text>
        </>
      )}
    </>
  );
}

function Empty(props: { text: string }) {
  return (
    <text x={W / 2} y={H / 2} textAnchor="middle" className="jp-Walnut-chartEmpty">
      {props.text}
    </text>
  );
}

export function LineChart(props: IChartProps): JSX.Element {
  const top = props.top ?? niceMax(Math.max(0, ...props.values));
  const points = linePoints(props.values, props.labels, W - PAD.left, H - PAD.bottom - PAD.top, top).map(p => ({
    ...p,
    x: p.x + PAD.left,
    y: p.y + PAD.top
  }));
  return (
    <svg className="jp-Walnut-bigChart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={props.label} data-testid={props.testId}>
      <Frame top={top} unit={props.unit} labels={props.labels} />
      {points.length === 0 ? (
        <Empty text="no data yet" />
      ) : (
        <>
          <polyline points={polylinePoints(points)} className="jp-Walnut-chartLine" />
          {points.map((p, i) => (
            <circle key={i} cx={p.x} cy={p.y} r={2} className="jp-Walnut-point" data-value={p.value}>
              <title>{props.titles[i]}</title>
            </circle>
          ))}
        </>
      )}
    </svg>
  );
}

export function BarChart(props: IChartProps): JSX.Element {
  const top = props.top ?? niceMax(Math.max(0, ...props.values));
  const rects = bars(props.values, props.labels, W - PAD.left, H - PAD.bottom - PAD.top, top);
  return (
    <svg className="jp-Walnut-bigChart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={props.label} data-testid={props.testId}>
      <Frame top={top} unit={props.unit} labels={props.labels} />
      {rects.length === 0 ? (
        <Empty text="no data yet" />
      ) : (
        rects.map((b, i) => (
          <rect
            key={i}
            x={b.x + PAD.left}
            y={b.y + PAD.top}
            width={b.width}
            height={Math.max(b.height, b.value > 0 ? 1 : 0)}
            className="jp-Walnut-point jp-Walnut-bar"
            data-value={b.value}
          >
            <title>{props.titles[i]}</title>
          </rect>
        ))
      )}
    </svg>
  );
}
