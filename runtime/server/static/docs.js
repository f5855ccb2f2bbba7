// Renders /openapi.json as a readable page: operations, their bodies, status codes and the schemas.
"use strict";

function el(tag, cls, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function json(value) { return el("pre", "", JSON.stringify(value, null, 2)); }

async function main() {
  const spec = await (await fetch("/openapi.json")).json();
  document.getElementById("intro").textContent = `${spec.info.title} ${spec.info.version}: ${spec.info.description}`;
  const ops = document.getElementById("ops");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const body = el("div", "body");
      if (op.description) body.append(el("p", "", op.description));
      for (const p of op.parameters || []) body.append(el("p", "", el("code", "", `${p.name}`), ` (${p.in}): `, JSON.stringify(p.schema)));
      if (op.requestBody) {
        for (const [type, content] of Object.entries(op.requestBody.content)) {
          body.append(el("h4", "", `Request body: ${type}`), json(content.schema));
        }
      }
      const table = el("table", "codes");
      for (const [code, r] of Object.entries(op.responses)) {
        table.append(el("tr", "", el("td", "", code), el("td", "", r.description)));
      }
      body.append(el("h4", "", "Responses"), table);
      ops.append(el("details", "op", el("summary", "", el("span", `method m-${method}`, method.toUpperCase()),
        el("span", "path", path), el("span", "op-sum", op.summary || "")), body));
    }
  }
  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries(spec.components.schemas)) {
    schemas.append(el("details", "op", el("summary", "", el("span", "path", name)), el("div", "body", json(schema))));
  }
}

main();
