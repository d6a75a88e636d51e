// Azure Monitor workspace (managed Prometheus) with the data collection endpoint and rule that AKS's metrics
// add-on (azureMonitorProfile.metrics) remote-writes through. The association to each cluster lives in aks.bicep.

@description('Name of the Azure Monitor workspace.')
@minLength(4)
@maxLength(44)
param name string

@description('Azure region of the workspace, endpoint and rule.')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

resource monitorWorkspace 'Microsoft.Monitor/accounts@2023-04-03' = {
  name: name
  location: location
  tags: tags
  properties: {}
}

resource collectionEndpoint 'Microsoft.Insights/dataCollectionEndpoints@2023-03-11' = {
  name: 'MSProm-${location}-${name}'
  location: location
  tags: tags
  kind: 'Linux'
  properties: {
    networkAcls: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

resource collectionRule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: 'MSProm-${location}-${name}'
  location: location
  tags: tags
  kind: 'Linux'
  properties: {
    dataCollectionEndpointId: collectionEndpoint.id
    dataSources: {
      prometheusForwarder: [
        {
          name: 'PrometheusDataSource'
          streams: [
            'Microsoft-PrometheusMetrics'
          ]
          labelIncludeFilter: {}
        }
      ]
    }
    destinations: {
      monitoringAccounts: [
        {
          name: 'MonitoringAccount1'
          accountResourceId: monitorWorkspace.id
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          'Microsoft-PrometheusMetrics'
        ]
        destinations: [
          'MonitoringAccount1'
        ]
      }
    ]
  }
}

@description('Resource ID of the Azure Monitor workspace.')
output id string = monitorWorkspace.id

@description('Name of the Azure Monitor workspace.')
output name string = monitorWorkspace.name

@description('Prometheus query endpoint of the workspace (PromQL over HTTPS with an Entra ID token).')
output queryEndpoint string = monitorWorkspace.properties.metrics.prometheusQueryEndpoint

@description('Resource ID of the data collection endpoint.')
output collectionEndpointId string = collectionEndpoint.id

@description('Resource ID of the Prometheus data collection rule.')
output collectionRuleId string = collectionRule.id
