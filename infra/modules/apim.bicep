// API Management in front of the KServe inference endpoint. Injected into the VNet in External mode so it can
// reach the cluster's internal ingress, while clients reach it over HTTPS. Callers need a subscription key of the
// fraud-scoring product and, when jwtAudience is set, also an Entra ID token (validate-jwt). A per-subscription
// rate limit protects the model server. Operations: the Open Inference Protocol v2 infer, model metadata and
// readiness routes of one model.

@description('Name of the API Management service (globally unique).')
@minLength(1)
@maxLength(50)
param name string

@description('Azure region of the service.')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('SKU: Developer (no SLA, cheapest with VNet injection) or Premium (SLA, zones).')
@allowed([
  'Developer'
  'Premium'
])
param skuName string = 'Premium'

@description('Scale units (Developer supports exactly 1).')
@minValue(1)
@maxValue(12)
param capacity int = 1

@description('Availability zones (Premium only; empty: none).')
param availabilityZones array = []

@description('Email of the API publisher (notifications).')
@minLength(3)
param publisherEmail string

@description('Name of the API publisher organisation.')
@minLength(1)
param publisherName string

@description('Resource ID of the subnet API Management is injected into.')
@minLength(1)
param subnetId string

@description('Base URL of the inference ingress inside the VNet, for example http://10.20.0.250 (empty: set later).')
param backendUrl string = ''

@description('Host header the ingress routes on (the InferenceService host); empty: leave the host unchanged.')
param backendHostName string = ''

@description('Name of the served model (v2 route /v2/models/<name>/infer).')
@minLength(1)
@maxLength(63)
param modelName string = 'fraud-detector'

@description('Requests allowed per subscription in each renewal period.')
@minValue(1)
@maxValue(1000000)
param rateLimitCalls int = 600

@description('Rate-limit renewal period in seconds.')
@minValue(1)
@maxValue(3600)
param rateLimitPeriodSeconds int = 60

@description('Entra ID audience (application ID URI) required in bearer tokens; empty: subscription keys only.')
param jwtAudience string = ''

@description('Log Analytics workspace receiving gateway logs (empty: none).')
param logAnalyticsWorkspaceId string = ''

var jwtPolicy = empty(jwtAudience) ? '' : '<validate-jwt header-name="Authorization" failed-validation-httpcode="401" failed-validation-error-message="Unauthorized" require-scheme="Bearer"><openid-config url="${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0/.well-known/openid-configuration" /><audiences><audience>${jwtAudience}</audience></audiences></validate-jwt>'
var hostPolicy = empty(backendHostName) ? '' : '<set-header name="Host" exists-action="override"><value>${backendHostName}</value></set-header>'
var apiPolicy = '<policies><inbound><base />${jwtPolicy}<rate-limit-by-key calls="${rateLimitCalls}" renewal-period="${rateLimitPeriodSeconds}" counter-key="@(context.Subscription.Id)" increment-condition="@(context.Response.StatusCode &lt; 500)" />${hostPolicy}</inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>'

var operations = [
  {
    name: 'infer'
    displayName: 'Score transactions (v2 infer)'
    method: 'POST'
    urlTemplate: '/v2/models/${modelName}/infer'
  }
  {
    name: 'model-metadata'
    displayName: 'Model metadata (v2)'
    method: 'GET'
    urlTemplate: '/v2/models/${modelName}'
  }
  {
    name: 'model-ready'
    displayName: 'Model readiness (v2)'
    method: 'GET'
    urlTemplate: '/v2/models/${modelName}/ready'
  }
  {
    name: 'server-ready'
    displayName: 'Server readiness (v2)'
    method: 'GET'
    urlTemplate: '/v2/health/ready'
  }
]

resource publicIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = {
  name: 'pip-${name}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Regional'
  }
  zones: empty(availabilityZones) ? null : availabilityZones
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
    dnsSettings: {
      domainNameLabel: toLower(name)
    }
  }
}

resource service 'Microsoft.ApiManagement/service@2024-05-01' = {
  // checkov:skip=CKV_AZURE_174: API Management is the internet-facing gateway of the scoring API (External VNet mode requires public access); callers are gated by subscription keys or Entra tokens and the per-subscription rate limit.
  // checkov:skip=CKV_AZURE_173: false positive: the check treats the string 'False' as enabled; customProperties below disable SSL 3.0, TLS 1.0 and TLS 1.1 on both client and backend sides.
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    capacity: skuName == 'Developer' ? 1 : capacity
  }
  zones: skuName == 'Premium' && !empty(availabilityZones) ? availabilityZones : null
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    virtualNetworkType: 'External'
    virtualNetworkConfiguration: {
      subnetResourceId: subnetId
    }
    publicIpAddressId: publicIp.id
    publicNetworkAccess: 'Enabled'
    disableGateway: false
    customProperties: {
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Ssl30': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls11': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Ssl30': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls10': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls11': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Ciphers.TripleDes168': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Protocols.Server.Http2': 'True'
    }
  }
}

resource api 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: service
  name: 'fraud-scoring'
  properties: {
    displayName: 'Fraud scoring (KServe Open Inference Protocol v2)'
    path: 'fraud'
    protocols: [
      'https'
    ]
    apiType: 'http'
    subscriptionRequired: true
    subscriptionKeyParameterNames: {
      header: 'Ocp-Apim-Subscription-Key'
      query: 'subscription-key'
    }
    serviceUrl: empty(backendUrl) ? null : backendUrl
  }
}

resource apiPolicyResource 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: api
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: apiPolicy
  }
}

resource apiOperations 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = [
  for op in operations: {
    parent: api
    name: op.name
    properties: {
      displayName: op.displayName
      method: op.method
      urlTemplate: op.urlTemplate
    }
  }
]

resource product 'Microsoft.ApiManagement/service/products@2024-05-01' = {
  parent: service
  name: 'fraud-scoring'
  properties: {
    displayName: 'Fraud scoring'
    description: 'Access to the fraud scoring API; subscriptions need approval.'
    subscriptionRequired: true
    approvalRequired: true
    subscriptionsLimit: 10
    state: 'published'
  }
}

resource productApi 'Microsoft.ApiManagement/service/products/apis@2024-05-01' = {
  parent: product
  name: api.name
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsWorkspaceId)) {
  name: 'to-log-analytics'
  scope: service
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

@description('Resource ID of the API Management service.')
output id string = service.id

@description('Gateway URL; the scoring route is <gatewayUrl>/fraud/v2/models/<model>/infer.')
output gatewayUrl string = service.properties.gatewayUrl

@description('Gateway host name (the public scoring host).')
output gatewayHostName string = replace(service.properties.gatewayUrl, 'https://', '')
