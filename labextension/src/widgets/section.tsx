import * as React from 'react';

/** A titled sidebar section, labelled by its heading. */
export function Section(props: { id: string; title: string; extra?: React.ReactNode; children: React.ReactNode }) {
  const headingId = `${props.id}-heading`;
  return (
    <section className="jp-Walnut-section" id={props.id} aria-labelledby={headingId}>
      <div className="jp-Walnut-sectionHeader">
        <h3 id={headingId}>{props.title}</h3>
        {props.extra}
      </div>
      {props.children}
    </section>
  );
}

/** A role=alert line, rendered only when there is an error. */
export function ErrorNote(props: { text: string | null | undefined }) {
  if (!props.text) {
    return null;
  }
  return (
    <div className="jp-Walnut-error" role="alert">
      {props.text}
    </div>
  );
}
